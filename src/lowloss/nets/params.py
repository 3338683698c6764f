"""Parameter sets: a network's tensors by state-dict key, one point or many stacked along a leading axis."""

from __future__ import annotations

from collections.abc import Sequence

import torch

Params = dict[str, torch.Tensor]


def stack_params(params: Sequence[Params]) -> Params:
    """A list of parameter sets -> one stacked set (leading axis = point)."""
    return {key: torch.stack([p[key] for p in params]) for key in params[0]}


def unstack_params(stacked: Params, index: int) -> Params:
    """One point of a stacked parameter set."""
    return {key: value[index] for key, value in stacked.items()}


def on_device(params: Params, device: torch.device) -> Params:
    """The tensors on `device` as float32, the precision every evaluation runs in."""
    return {key: value.to(device, torch.float32) for key, value in params.items()}
