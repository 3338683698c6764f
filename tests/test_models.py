"""Forward shapes and option handling of the four architectures."""

import pytest
import torch

from lowloss.errors import LowlossError
from lowloss.kinds import ARCHITECTURE_KINDS
from lowloss.models import ARCHITECTURES, build_model
from lowloss.network import Network


@pytest.mark.parametrize("arch,shape,options,n_params", [
    ("onehidden", (1, 28, 28), {}, 784 * 2000 + 2000 + 2000 * 10 + 10),
    ("fc3", (3, 32, 32), {"widths": [64, 32]}, 3072 * 64 + 64 * 32 + 32 * 10),
    ("conv2fc1", (3, 32, 32), {}, 3 * 32 * 25 + 32 + 64 * 32 * 25 + 64 + 3136 * 10 + 10),
    ("vgg16", (3, 32, 32), {"width_multiplier": 0.125}, None),
    ("vgg16", (1, 8, 8), {"width_multiplier": 0.0625}, None),
])
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


def test_unknown_architecture_and_option():
    with pytest.raises(LowlossError, match="unknown architecture 'resnet'.*onehidden"):
        build_model("resnet", (1, 8, 8), 10)
    with pytest.raises(LowlossError, match="no option"):
        build_model("onehidden", (1, 8, 8), 10, {"channels": [1]})


@pytest.mark.parametrize("arch", list(ARCHITECTURES))
def test_every_architecture_has_the_kind_the_method_table_expects(arch):
    """`lowloss.kinds.ARCHITECTURE_KINDS` decides which methods a config may ask for without building anything;
    it must agree with what the real spec says."""
    shape = (1, 8, 8)
    assert Network(build_model(arch, shape, 10)).kind == ARCHITECTURE_KINDS[arch]
