"""A network as a chain of layers: cuts at layer boundaries compose to the forward pass; bad cuts and
networks that are not chains are refused in one line."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lowloss.connect.registry import get_method
from lowloss.errors import LowlossError
from lowloss.kinds import ANY
from lowloss.network import INPUT, OUTPUT, Network, after, before
from lowloss.spec import Spec, dense
from tests.conftest import SMALL, context, network_of, random_params


@pytest.mark.parametrize("arch", list(SMALL))
def test_cuts_at_every_layer_compose_to_the_forward_pass(arch):
    network = network_of(arch)
    theta = random_params(3, arch=arch)
    x = torch.randn(5, 1, 8, 8)
    whole = network.run(theta, x)
    torch.testing.assert_close(whole, torch.func.functional_call(network.model, theta, (x,)))
    for layer in network.layers:
        h = network.run(theta, x, INPUT, before(layer))
        h = network.run(theta, h, before(layer), after(layer))
        torch.testing.assert_close(network.run(theta, h, after(layer), OUTPUT), whole)
    assert network.is_chain and [layer.computes for layer in network.layers][-1] is None


def test_unknown_layers_and_backward_cuts_are_one_line_errors():
    network = network_of("fc3")
    with pytest.raises(LowlossError, match="unknown layer 'fc9' \\(layers: fc1, fc2, fc3\\)"):
        network.layer("fc9")
    with pytest.raises(LowlossError, match="unknown cut 'fc9:in'"):
        network.segment(INPUT, "fc9:in")
    with pytest.raises(LowlossError, match="cut 'fc1:in' comes before 'fc2:out'"):
        network.segment(after("fc2"), before("fc1"))


class Residual(nn.Module):
    """x -> h = relu(fc1 x) -> fc2(h + relu(fc_skip h)): the last layer reads a sum over a skip."""

    def __init__(self):
        super().__init__()
        self.fc1, self.skip, self.fc2 = nn.Linear(64, 8), nn.Linear(8, 8), nn.Linear(8, 10)

    def forward(self, x):
        h = F.relu(self.fc1(x.flatten(1)))
        return self.fc2(h + F.relu(self.skip(h)))

    @staticmethod
    def spec() -> Spec:
        return Spec({**dense("fc1", None, "h1"), **dense("skip", "h1", "h1"), **dense("fc2", "h1", None)})


def test_a_network_with_a_skip_connection_is_not_a_chain_and_layered_methods_refuse_it():
    network = Network(Residual().eval())
    assert not network.is_chain and network.kind == ANY
    with pytest.raises(LowlossError, match="reads values from before skip:out; the network cannot be cut there"):
        network.segment(after("skip"), OUTPUT)
    with pytest.raises(LowlossError, match="method 'arc\\+wa' applies to chains of dense and conv layers, not to "
                                           "'residual'"):
        get_method("arc+wa").check(network, "residual", context(network))
