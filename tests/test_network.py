"""A network as a chain of layers: cuts at layer boundaries compose to the forward pass; bad cuts and
networks that are not chains are refused in one line; a residual network cuts into stages."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lowloss.errors import LowlossError
from lowloss.methods.registry import get_method
from lowloss.nets.network import INPUT, OUTPUT, Network, after, before
from lowloss.nets.spec import Spec, dense
from lowloss.nets.topology import ANY, STAGED
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


class PreActivationSkip(nn.Module):
    """x -> p = fc1 x -> fc3(relu(fc2 relu(p))) + head(p): layers read h1's units from two tensors (before and
    after its ReLU), so no cut separates h1 from what follows."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2, self.fc3, self.head = nn.Linear(64, 8), nn.Linear(8, 6), nn.Linear(6, 10), nn.Linear(8, 10)

    def forward(self, x):
        p = self.fc1(x.flatten(1))
        return self.fc3(F.relu(self.fc2(F.relu(p)))) + self.head(p)

    @staticmethod
    def spec() -> Spec:
        return Spec(
            {
                **dense("fc1", None, "h1"),
                **dense("fc2", "h1", "h2"),
                **dense("fc3", "h2", None),
                **dense("head", "h1", None),
            }
        )


def test_a_skip_within_a_group_is_one_stage_and_a_second_tensor_read_is_refused_in_one_line():
    network = Network(Residual().eval())
    assert not network.is_chain and network.topology == STAGED
    with pytest.raises(LowlossError, match="reads values from before skip:out; the network cannot be cut there"):
        network.segment(after("skip"), OUTPUT)
    (stage,) = network.stages
    assert stage.groups == ("h1",) and stage.entry == before("fc1") and [r.name for r in stage.readers] == ["fc2"]
    assert set(stage.keys) == {"fc1.weight", "fc1.bias", "skip.weight", "skip.bias"}
    network = Network(PreActivationSkip().eval())
    assert network.topology == ANY
    with pytest.raises(LowlossError, match="PreActivationSkip: the layers that read stage h1 do not read one tensor"):
        _ = network.stages
    with pytest.raises(
        LowlossError, match="method 'arc\\+wa' applies to networks that cut into stages .*, not to 'preact'"
    ):
        get_method("arc+wa").check(network, "preact", context(network))


def test_a_residual_stage_is_its_stream_and_its_blocks_entered_and_read_through_one_tensor():
    network = network_of("resnet20", {"width_multiplier": 1 / 8, "norm": "batch"})
    stages = network.stages
    assert [stage.groups for stage in stages] == [
        ("stream1", "layer1.0", "layer1.1", "layer1.2"),
        ("layer2.0", "stream2", "layer2.1", "layer2.2"),
        ("layer3.0", "stream3", "layer3.1", "layer3.2"),
    ]
    assert [stage.entry for stage in stages] == [before("conv1"), before("layer2.0.conv1"), before("layer3.0.conv1")]
    assert [[reader.name for reader in stage.readers] for stage in stages] == [
        ["layer2.0.conv1", "layer2.0.shortcut.0"],
        ["layer3.0.conv1", "layer3.0.shortcut.0"],
        ["fc"],
    ]
    keys = [key for stage in stages for key in stage.keys]  # every trained tensor and statistic in one stage
    outside = ("num_batches_tracked", "fc.weight", "fc.bias")  # BatchNorm's counters and the output layer
    assert sorted(keys) == sorted(key for key in network.spec.axes if not key.endswith(outside))
