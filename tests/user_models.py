"""Networks as a user writes them, for the tests of the user's own models: importable as
`tests.user_models:NAME` from the project's root, like a user's `package.module:ClassOrFactory`."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lowloss.nets.spec import Spec, conv, dense, norm


class TinyCNN(nn.Module):
    """Two conv + BatchNorm + ReLU blocks, average pooling to 2×2 and a linear read-out of the flattened
    features, with its spec written by hand (the spec of a user's module that defines `spec()`). Without
    BatchNorm it is a chain of layers (an ensemble's members must be)."""

    def __init__(
        self, channels: tuple[int, int] = (4, 8), num_classes: int = 10, in_channels: int = 1, batch_norm: bool = True
    ):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels[0], 3, padding=1)
        self.bn1 = nn.BatchNorm2d(channels[0]) if batch_norm else nn.Identity()
        self.conv2 = nn.Conv2d(channels[0], channels[1], 3, padding=1)
        self.bn2 = nn.BatchNorm2d(channels[1]) if batch_norm else nn.Identity()
        self.fc = nn.Linear(channels[1] * 4, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 2)
        x = F.relu(self.bn2(self.conv2(x)))
        return self.fc(F.adaptive_avg_pool2d(x, 2).flatten(1))

    def spec(self) -> Spec:
        batch_norm = isinstance(self.bn1, nn.BatchNorm2d)
        return Spec(
            {
                **conv("conv1", None, "c1"),
                **(norm("bn1", "c1", running_stats=True) if batch_norm else {}),
                **conv("conv2", "c1", "c2"),
                **(norm("bn2", "c2", running_stats=True) if batch_norm else {}),
                **dense("fc", "c2", None),
            }
        )


def tiny_cnn(width: int = 4, num_classes: int = 10) -> TinyCNN:
    """A factory, as some users write them: channels (width, 2 · width)."""
    return TinyCNN((width, 2 * width), num_classes)


class SkipGateCat(nn.Module):
    """A module with a skip, a gate and a concatenation (spec inference must see all three)."""

    def __init__(self, channels: int = 4, num_classes: int = 10):
        super().__init__()
        self.stem = nn.Conv2d(1, channels, 3, padding=1)
        self.body = nn.Conv2d(channels, channels, 3, padding=1)
        self.gate = nn.Conv2d(channels, channels, 1)
        self.side = nn.Conv2d(channels, channels, 3, padding=1)
        self.fc = nn.Linear(2 * channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.stem(x))
        x = x + F.relu(self.body(x))  # skip
        x = x * torch.sigmoid(self.gate(x))  # gate
        x = torch.cat([x, F.relu(self.side(x))], dim=1)  # concatenation
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


class HandAttention(nn.Module):
    """Self-attention written by hand over the positions: its heads' symmetry is not a channel permutation
    that inference can see, so it must be refused by name."""

    def __init__(self, channels: int = 4, num_classes: int = 10):
        super().__init__()
        self.embed = nn.Conv2d(1, channels, 3, padding=1)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.embed(x).flatten(2).transpose(1, 2)
        q, k, v = self.qkv(tokens).chunk(3, dim=-1)
        attention = torch.softmax(q @ k.transpose(1, 2) / q.shape[-1] ** 0.5, dim=-1)
        return self.fc((attention @ v).mean(1))


class Untraceable(nn.Module):
    """Control flow that depends on the data: torch.fx cannot trace it."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        if x.sum() > 0:
            x = -x
        return self.fc(x)
