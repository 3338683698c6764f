"""The one way lowloss picks a torch device."""

from __future__ import annotations

import torch

from lowloss.errors import LowlossError


def pick_device(name: str = "auto") -> torch.device:
    """Return `cuda` when available for "auto", else the device named; a GPU is never required."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise LowlossError(f"device {name!r} requested but CUDA is not available (use --device auto or cpu)")
    try:
        return torch.device(name)
    except RuntimeError as exc:
        raise LowlossError(f"unknown device {name!r}: {exc}") from None
