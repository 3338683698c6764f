"""The spec invariant: permuting a hidden-unit group as the spec says leaves the outputs unchanged."""

import pytest
import torch
from torch.func import functional_call

from lowloss.nets.models import build_model
from lowloss.nets.spec import from_unit_view, permute, unit_view

CASES = [
    ("onehidden", (1, 8, 8), {"width": 32}),
    ("fc3", (1, 8, 8), {"widths": [48, 24]}),
    ("conv2fc1", (1, 28, 28), {"channels": [6, 8]}),
    ("conv2fc1", (3, 32, 32), {"channels": [4, 5]}),
    ("vgg16", (3, 32, 32), {"width_multiplier": 1 / 16}),
    ("resnet20", (3, 32, 32), {"width_multiplier": 1 / 8, "norm": "batch"}),
    ("resnet20", (1, 8, 8), {"width_multiplier": 1 / 4, "norm": "layer"}),
    ("resnet20", (1, 8, 8), {"width_multiplier": 1 / 4, "norm": "none"}),
]


def random_perms(model, params, seed=0):
    gen = torch.Generator().manual_seed(seed)
    spec = model.spec()
    return {g: torch.randperm(spec.size(params, g), generator=gen) for g in spec.groups}


def network(arch, shape, options):
    """(model in eval mode, its parameters, a batch of inputs), all from seed 0.

    Biases, normalisation scales and shifts and BatchNorm's running statistics are drawn at random: at
    their initial values (zeros, ones) a permutation would leave them unchanged whatever the spec says.
    """
    torch.manual_seed(0)
    model = build_model(arch, shape, 10, options).eval()
    params = {k: randomised(k, v.detach()) for k, v in model.state_dict().items()}
    return model, params, torch.randn(7, *shape)


def randomised(key: str, tensor: torch.Tensor) -> torch.Tensor:
    if tensor.dim() != 1 or not tensor.is_floating_point():
        return tensor
    return torch.rand_like(tensor) + 0.5 if key.endswith("running_var") else torch.randn_like(tensor)


@pytest.mark.parametrize("arch,shape,options", CASES)
def test_permuting_every_group_keeps_the_function(arch, shape, options):
    model, params, x = network(arch, shape, options)
    spec = model.spec()
    assert set(spec.axes) == set(params), "the spec must cover every state-dict key"
    perms = random_perms(model, params)
    permuted = permute(params, spec, perms)
    with torch.no_grad():
        expected = functional_call(model, params, (x,))
        got = functional_call(model, permuted, (x,))
    assert any(not torch.equal(params[k], permuted[k]) for k in params)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("arch,shape,options", CASES)
def test_a_wrong_permutation_changes_the_function(arch, shape, options):
    """Guard against a vacuous invariant: permuting only the incoming side must break the network."""
    model, params, x = network(arch, shape, options)
    spec = model.spec()
    group = spec.groups[0]
    perm = torch.roll(torch.arange(spec.size(params, group)), 1)
    broken = dict(params)
    for key in spec.incoming(group):
        broken[key] = params[key][perm]
    with torch.no_grad():
        assert not torch.allclose(functional_call(model, broken, (x,)), functional_call(model, params, (x,)))


def test_unit_view_round_trips_flattened_conv_features():
    weight = torch.randn(10, 6 * 4)
    units = unit_view(weight, 1, 6)
    assert units.shape == (6, 40)
    torch.testing.assert_close(units[2], weight[:, 8:12].T.reshape(-1))
    assert torch.equal(from_unit_view(units, weight, 1), weight)


def test_groups_are_ordered_from_input_to_output():
    model = build_model("vgg16", (3, 32, 32), 10, {"width_multiplier": 1 / 16})
    assert model.spec().groups == [f"c{i}" for i in range(1, 14)] + ["f1", "f2"]
