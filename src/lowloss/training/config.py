"""The hyper-parameters of endpoint training, importable without torch (the command line shows their defaults)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of endpoint training; the defaults are the paper's."""

    epochs: int = 30
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-4
    batch_size: int = 128
    seed: int = 0
