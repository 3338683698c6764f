"""How ν is built and fitted, importable without torch (the command line shows the defaults)."""

from __future__ import annotations

from dataclasses import dataclass

LAYERS, HIDDEN = 6, 128
"""Default ν: coupling / autoregressive layers, and the hidden width of their conditioner networks."""


@dataclass(frozen=True)
class FitConfig:
    """How ν is fitted. `batch_size` counts neurons (Flow) or training samples (Bijection)."""

    steps: int = 2000
    lr: float = 1e-3
    batch_size: int = 256
    seed: int = 0
    t_uniform: bool = False
    checkpoint_every: int = 100
    max_grad_norm: float = 10.0
