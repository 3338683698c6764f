"""The built-in architectures, as one table that imports no torch.

Everything that names an architecture reads this table: the command line (`--arch` and its options), the
config check of the workflow, the method table (which methods apply where) and `build_model`, which
imports an architecture's module only when it builds one. Adding an architecture is one nn.Module with a
`spec()` method and one line here; a test builds every architecture and checks its topology and weight
layers against this table.
"""

from __future__ import annotations

from dataclasses import dataclass

from lowloss.nets.topology import LAYERED, ONE_HIDDEN, STAGED


@dataclass(frozen=True)
class Architecture:
    """An architecture: its module class (`module:Class`, built as `Class(input_shape, num_classes, **options)`),
    its options with their defaults, its topology (what methods apply to it) and its dense and conv layers
    (WA(n) of an ensemble needs 1 ≤ n < this)."""

    builder: str
    options: dict
    topology: str
    weight_layers: int


NORMS = ("batch", "layer", "none")
"""resnet20's normalisation layers: BatchNorm, LayerNorm (over channels and positions) or none."""

ARCHITECTURES: dict[str, Architecture] = {
    "onehidden": Architecture("lowloss.nets.models:OneHidden", {"width": 2000}, ONE_HIDDEN, 2),
    "fc3": Architecture("lowloss.nets.models:FC3", {"widths": [6144, 2000]}, LAYERED, 3),
    "conv2fc1": Architecture("lowloss.nets.models:Conv2FC1", {"channels": [32, 64]}, LAYERED, 3),
    "vgg16": Architecture("lowloss.nets.models:VGG16", {"width_multiplier": 1.0}, LAYERED, 16),
    "resnet20": Architecture("lowloss.nets.resnet:ResNet20", {"width_multiplier": 1.0, "norm": NORMS[0]}, STAGED, 22),
}
