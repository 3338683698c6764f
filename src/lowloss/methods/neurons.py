"""Parameter set <-> neuron samples, driven by the spec.

A hidden unit's *butterfly* vector (paper Fig. 1) is everything attached to it: its incoming weight row
(or conv filter), its bias, and its outgoing weight column(s), concatenated in spec order. For the
one-hidden-layer MNIST net that is 784 + 1 + 10 = 795 numbers. Methods treat a group's butterflies as
n samples from a distribution in R^D and write the result back with `from_butterflies`.
"""

from __future__ import annotations

import torch

from lowloss.nets.params import Params
from lowloss.nets.spec import Spec, from_unit_view, unit_view


def butterflies(params: Params, spec: Spec, group: str) -> torch.Tensor:
    """(n, D) matrix of the group's butterfly vectors, one row per hidden unit."""
    n = spec.size(params, group)
    return torch.cat([unit_view(params[key], axis, n) for key, axis in spec.members(group)], dim=1)


def butterfly_slices(params: Params, spec: Spec, group: str) -> dict[str, slice]:
    """Which columns of the butterfly matrix belong to which parameter tensor."""
    n = spec.size(params, group)
    slices, start = {}, 0
    for key, _ in spec.members(group):
        width = params[key].numel() // n
        slices[key] = slice(start, start + width)
        start += width
    return slices


def from_butterflies(params: Params, spec: Spec, group: str, units: torch.Tensor) -> Params:
    """Write an (n, D) butterfly matrix back into a copy of `params` (other tensors untouched)."""
    out = dict(params)
    for (key, axis), cols in zip(spec.members(group), butterfly_slices(params, spec, group).values()):
        out[key] = from_unit_view(units[:, cols].contiguous(), params[key], axis)
    return out
