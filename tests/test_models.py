"""Forward shapes and option handling of the architectures."""

import pytest
import torch
from torch import nn

from lowloss.errors import LowlossError
from lowloss.nets.architectures import ARCHITECTURES
from lowloss.nets.models import build_model
from lowloss.nets.network import Network
from tests.conftest import assert_one_line_error, run_cli


@pytest.mark.parametrize(
    "arch,shape,options,n_params",
    [
        ("onehidden", (1, 28, 28), {}, 784 * 2000 + 2000 + 2000 * 10 + 10),
        ("fc3", (3, 32, 32), {"widths": [64, 32]}, 3072 * 64 + 64 * 32 + 32 * 10),
        ("conv2fc1", (3, 32, 32), {}, 3 * 32 * 25 + 32 + 64 * 32 * 25 + 64 + 3136 * 10 + 10),
        ("vgg16", (3, 32, 32), {"width_multiplier": 0.125}, None),
        ("vgg16", (1, 8, 8), {"width_multiplier": 0.0625}, None),
        ("resnet20", (3, 32, 32), {"width_multiplier": 0.25, "norm": "batch"}, None),
        ("resnet20", (1, 8, 8), {"width_multiplier": 0.25, "norm": "layer"}, None),
        ("resnet20", (1, 28, 28), {"width_multiplier": 0.25, "norm": "none"}, None),
    ],
)
def test_forward_shape(arch, shape, options, n_params):
    model = build_model(arch, shape, 10, options)
    out = model(torch.randn(3, *shape))
    assert out.shape == (3, 10)
    if n_params is not None:
        assert sum(p.numel() for p in model.parameters()) == n_params


def test_paper_sizes():
    assert build_model("fc3", (3, 32, 32), 10).fc2.weight.shape == (2000, 6144)
    assert build_model("conv2fc1", (3, 32, 32), 10).fc.in_features == 3136  # the authors' pooling: kernel 3, stride 2
    assert build_model("conv2fc1", (1, 28, 28), 10).fc.in_features == 64 * 6 * 6
    assert len(build_model("vgg16", (3, 32, 32), 10).conv_names) == 13


def test_resnet20_has_three_stages_of_three_blocks_and_projects_where_the_shape_changes():
    model = build_model("resnet20", (3, 32, 32), 10)
    convs = [module for module in model.modules() if isinstance(module, nn.Conv2d)]
    assert sum(conv.kernel_size == (3, 3) for conv in convs) == 19  # stem + 9 blocks x 2
    assert [conv.out_channels for conv in convs if conv.kernel_size == (1, 1)] == [32, 64]
    assert model.fc.in_features == 64 and not any(conv.bias is not None for conv in convs)
    assert sum(isinstance(module, nn.BatchNorm2d) for module in model.modules()) == 21
    assert model.layer3[0].conv1.stride == (2, 2) and model.layer1[0].conv1.stride == (1, 1)
    spec = model.spec()
    assert spec.groups[:2] == ["stream1", "layer1.0"] and len(spec.groups) == 3 + 9
    assert spec.axes["layer2.0.shortcut.0.weight"] == ("stream2", "stream1", None, None)
    assert spec.axes["layer2.1.conv2.weight"] == ("stream2", "layer2.1", None, None)


@pytest.mark.parametrize("norm,layer", [("batch", nn.BatchNorm2d), ("layer", nn.GroupNorm), ("none", nn.Identity)])
def test_resnet20_norms_and_width_multiplier(norm, layer):
    model = build_model("resnet20", (1, 8, 8), 10, {"width_multiplier": 0.5, "norm": norm})
    assert isinstance(model.norm1, layer) and isinstance(model.layer2[0].shortcut[1], layer)
    assert model.conv1.out_channels == 8 and model.fc.in_features == 32
    assert (model.conv1.bias is not None) == (norm == "none")


def test_resnet20_refuses_an_unknown_norm(tmp_path):
    with pytest.raises(LowlossError, match="unknown norm 'group' for resnet20 \\(known: batch, layer, none\\)"):
        build_model("resnet20", (1, 8, 8), 10, {"norm": "group"})
    out = tmp_path / "m.safetensors"
    result = run_cli("train", "--arch", "resnet20", "--norm", "group", "--out", out)
    assert_one_line_error(result, "argument --norm: unknown norm 'group'", "known: batch, layer, none")
    result = run_cli("train", "--arch", "vgg16", "--norm", "layer", "--out", out)
    assert_one_line_error(result, "--norm does not apply to --arch vgg16")
    assert not out.exists()


def test_unknown_architecture_and_option():
    with pytest.raises(LowlossError, match="unknown architecture 'resnet'.*onehidden"):
        build_model("resnet", (1, 8, 8), 10)
    with pytest.raises(LowlossError, match="no option"):
        build_model("onehidden", (1, 8, 8), 10, {"channels": [1]})


@pytest.mark.parametrize("arch", list(ARCHITECTURES))
def test_every_architecture_is_what_the_architecture_table_says(arch):
    """The table (`lowloss.nets.architectures`) decides which methods a config may ask for and which WA(n) an
    ensemble may use without building anything; it must agree with the real network."""
    network = Network(build_model(arch, (1, 8, 8), 10))
    assert network.topology == ARCHITECTURES[arch].topology
    assert len(network.layers) == ARCHITECTURES[arch].weight_layers
