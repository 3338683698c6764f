"""Architectures, each with its Spec, built from a name and a few options; and any other network, built from
its reference (`lowloss.nets.references`).

Adding an architecture = one nn.Module with a `spec()` method and one line in `lowloss.nets.architectures`.
Input shapes come from the dataset: (channels, height, width).
"""

from __future__ import annotations

import importlib
import math

import torch
import torch.nn.functional as F
from torch import nn

from lowloss.errors import LowlossError, unknown_name
from lowloss.nets.architectures import ARCHITECTURES
from lowloss.nets.external import build_reference
from lowloss.nets.references import is_reference
from lowloss.nets.spec import Spec, conv, dense


class OneHidden(nn.Module):
    """Paper Table 1: x -> ReLU(W1 x + b1) -> W2 h + b2."""

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, width: int = 2000):
        super().__init__()
        self.fc1 = nn.Linear(math.prod(input_shape), width)
        self.fc2 = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.relu(self.fc1(x.flatten(1))))

    @staticmethod
    def spec() -> Spec:
        return Spec({**dense("fc1", None, "h1"), **dense("fc2", "h1", None)})


class FC3(nn.Module):
    """Paper Table 2 (FC3): three dense layers without biases, hidden widths 6144 and 2000."""

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, widths: tuple[int, int] = (6144, 2000)):
        super().__init__()
        self.fc1 = nn.Linear(math.prod(input_shape), widths[0], bias=False)
        self.fc2 = nn.Linear(widths[0], widths[1], bias=False)
        self.fc3 = nn.Linear(widths[1], num_classes, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x.flatten(1))))))

    @staticmethod
    def spec() -> Spec:
        return Spec(
            {
                **dense("fc1", None, "h1", bias=False),
                **dense("fc2", "h1", "h2", bias=False),
                **dense("fc3", "h2", None, bias=False),
            }
        )


class Conv2FC1(nn.Module):
    """Paper Table 2 (Conv2FC1), as in the authors' code: two blocks of 5x5 conv (padding 2) + ReLU +
    max-pool (kernel 3, stride 2), then one linear layer: 64 x 7 x 7 = 3136 inputs on CIFAR-10."""

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, channels: tuple[int, int] = (32, 64)):
        super().__init__()
        c, h, w = input_shape
        self.conv1 = nn.Conv2d(c, channels[0], 5, padding=2)
        self.conv2 = nn.Conv2d(channels[0], channels[1], 5, padding=2)
        self.fc = nn.Linear(channels[1] * _pooled(_pooled(h)) * _pooled(_pooled(w)), num_classes)
        for layer in (self.conv1, self.conv2):
            _he_init(layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 3, stride=2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 3, stride=2)
        return self.fc(x.flatten(1))

    @staticmethod
    def spec() -> Spec:
        return Spec({**conv("conv1", None, "c1"), **conv("conv2", "c1", "c2"), **dense("fc", "c2", None)})


def _pooled(size: int) -> int:
    """Output size of a kernel-3, stride-2 max-pool."""
    return (size - 3) // 2 + 1


def _he_init(layer: nn.Conv2d) -> None:
    """Garipov et al.'s (and the paper authors') conv initialisation: N(0, 2 / (k² · out_channels)), zero bias."""
    fan_out = layer.kernel_size[0] * layer.kernel_size[1] * layer.out_channels
    nn.init.normal_(layer.weight, 0.0, math.sqrt(2.0 / fan_out))
    nn.init.zeros_(layer.bias)


VGG16_LAYOUT = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")


class VGG16(nn.Module):
    """The 13-conv VGG16 without batch norm of Garipov et al.'s code, with a width multiplier.

    Pools use ceil_mode so that any input of at least 1x1 (digits 8x8, MNIST 28x28, CIFAR 32x32)
    ends at 1x1 after the five pools.
    """

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, width_multiplier: float = 1.0):
        super().__init__()
        channels = [max(1, round(c * width_multiplier)) for c in VGG16_LAYOUT if c != "M"]
        self.conv_names = [f"conv{i + 1}" for i in range(len(channels))]
        previous = input_shape[0]
        for name, out in zip(self.conv_names, channels):
            setattr(self, name, nn.Conv2d(previous, out, 3, padding=1))
            previous = out
        hidden = max(1, round(512 * width_multiplier))
        self.fc1 = nn.Linear(previous, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.fc3 = nn.Linear(hidden, num_classes)
        self.dropout = nn.Dropout(0.5)
        for name in self.conv_names:  # torch's default initialisation leaves a thin VGG dead
            _he_init(getattr(self, name))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        names = iter(self.conv_names)
        for item in VGG16_LAYOUT:
            if item == "M":
                x = F.max_pool2d(x, 2, ceil_mode=True)
            else:
                x = F.relu(getattr(self, next(names))(x))
        x = F.relu(self.fc1(self.dropout(x.flatten(1))))
        x = F.relu(self.fc2(self.dropout(x)))
        return self.fc3(x)

    def spec(self) -> Spec:
        entries = {}
        previous = None
        for i, name in enumerate(self.conv_names):
            entries.update(conv(name, previous, f"c{i + 1}"))
            previous = f"c{i + 1}"
        entries.update(dense("fc1", previous, "f1"))
        entries.update(dense("fc2", "f1", "f2"))
        entries.update(dense("fc3", "f2", None))
        return Spec(entries)


def arch_options(arch: str, options: dict | None = None) -> dict:
    """The architecture's defaults updated with `options`; unknown names and options are errors."""
    if arch not in ARCHITECTURES:
        raise unknown_name("architecture", arch, ARCHITECTURES)
    defaults = ARCHITECTURES[arch].options
    unknown = set(options or {}) - set(defaults)
    if unknown:
        raise LowlossError(f"architecture {arch!r} has no option(s) {sorted(unknown)} (it takes {sorted(defaults)})")
    return {**defaults, **(options or {})}


def build_model(arch: str, input_shape: tuple[int, ...], num_classes: int, options: dict | None = None) -> nn.Module:
    """Instantiate `arch` for inputs of `input_shape` (C, H, W) and `num_classes` outputs; a reference is built
    from its arguments `options` alone (they set its classes)."""
    if is_reference(arch):
        return build_reference(arch, options)
    opts = {
        key: tuple(value) if isinstance(value, list) else value for key, value in arch_options(arch, options).items()
    }
    module, _, name = ARCHITECTURES[arch].builder.partition(":")
    return getattr(importlib.import_module(module), name)(tuple(input_shape), num_classes, **opts)
