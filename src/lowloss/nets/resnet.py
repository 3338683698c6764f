"""He et al.'s CIFAR ResNet-20 with a choice of normalisation, and its spec (residual streams as groups)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lowloss.errors import LowlossError
from lowloss.nets.architectures import NORMS
from lowloss.nets.spec import Spec, conv, dense, norm

RESNET20_STAGES = (16, 32, 64)
RESNET20_BLOCKS = 3


def norm_layer(kind: str, channels: int) -> nn.Module:
    """BatchNorm, LayerNorm over (channels, height, width) with a per-channel scale and shift (GroupNorm with
    one group, as Git Re-Basin's ResNet20 uses: its statistics ignore the channels' order), or nothing."""
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "layer":
        return nn.GroupNorm(1, channels)
    return nn.Identity()


class BasicBlock(nn.Module):
    """Two 3x3 convs with a skip around them; a 1x1 conv (and norm) on the skip where the shape changes."""

    def __init__(self, c_in: int, c_out: int, stride: int, norm_kind: str):
        super().__init__()
        bias = norm_kind == "none"
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=bias)
        self.norm1 = norm_layer(norm_kind, c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=bias)
        self.norm2 = norm_layer(norm_kind, c_out)
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=bias), norm_layer(norm_kind, c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.norm1(self.conv1(x)))
        return F.relu(self.norm2(self.conv2(h)) + self.shortcut(x))


class ResNet20(nn.Module):
    """He et al.'s CIFAR ResNet-20: a 3x3 stem, three stages of three basic blocks (16, 32, 64 channels times
    the width multiplier; stages 2 and 3 halve the resolution), global average pooling, one linear layer.

    Every unit added into a stage's residual stream (the stem or the previous stage's stream, each block's
    second conv, the projecting skip) must move together, so the stream is one group; each block's inner
    units are another. The spec of Git Re-Basin's ResNet, for torch's layout.
    """

    def __init__(
        self, input_shape: tuple[int, ...], num_classes: int, width_multiplier: float = 1.0, norm: str = "batch"
    ):
        super().__init__()
        if norm not in NORMS:
            raise LowlossError(f"unknown norm {norm!r} for resnet20 (known: {', '.join(NORMS)})")
        self.norm_kind = norm
        widths = [max(1, round(c * width_multiplier)) for c in RESNET20_STAGES]
        self.conv1 = nn.Conv2d(input_shape[0], widths[0], 3, 1, 1, bias=norm == "none")
        self.norm1 = norm_layer(norm, widths[0])
        self.stage_names = [f"layer{s + 1}" for s in range(len(widths))]
        previous = widths[0]
        for s, (name, width) in enumerate(zip(self.stage_names, widths)):
            blocks = [
                BasicBlock(previous if b == 0 else width, width, 2 if s > 0 and b == 0 else 1, norm)
                for b in range(RESNET20_BLOCKS)
            ]
            setattr(self, name, nn.Sequential(*blocks))
            previous = width
        self.fc = nn.Linear(previous, num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.norm1(self.conv1(x)))
        for name in self.stage_names:
            x = getattr(self, name)(x)
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))

    def spec(self) -> Spec:
        bias, stats = self.norm_kind == "none", self.norm_kind == "batch"

        def normed_conv(name: str, norm_name: str, group_in: str | None, group_out: str) -> dict:
            entries = conv(name, group_in, group_out, bias)
            return entries if self.norm_kind == "none" else {**entries, **norm(norm_name, group_out, stats)}

        entries = normed_conv("conv1", "norm1", None, "stream1")
        previous = "stream1"
        for s, stage in enumerate(self.stage_names):
            stream = f"stream{s + 1}"
            for b, block in enumerate(getattr(self, stage)):
                prefix = inner = f"{stage}.{b}"  # a block's inner units are named after the block
                entries.update(normed_conv(f"{prefix}.conv1", f"{prefix}.norm1", previous, inner))
                entries.update(normed_conv(f"{prefix}.conv2", f"{prefix}.norm2", inner, stream))
                if len(block.shortcut):
                    entries.update(normed_conv(f"{prefix}.shortcut.0", f"{prefix}.shortcut.1", previous, stream))
                previous = stream
        entries.update(dense("fc", previous, None))
        return Spec(entries)
