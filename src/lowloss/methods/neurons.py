"""Parameter set <-> neuron samples, driven by the spec.

A hidden unit's *butterfly* vector (paper Fig. 1) is everything attached to it: its incoming weight row
(or conv filter), its bias, and its outgoing weight column(s), concatenated in spec order. For the
one-hidden-layer MNIST net that is 784 + 1 + 10 = 795 numbers. Methods treat a group's butterflies as
n samples from a distribution in R^D and write the result back with `from_butterflies`.
"""

from __future__ import annotations

import torch

from lowloss.nets.params import Params
from lowloss.nets.spec import Spec


def butterflies(params: Params, spec: Spec, group: str) -> torch.Tensor:
    """(n, D) matrix of the group's butterfly vectors, one row per hidden unit."""
    return torch.cat([spec.units(params, key, axis, group) for key, axis in spec.members(group)], dim=1)


def butterfly_slices(params: Params, spec: Spec, group: str) -> list[slice]:
    """Which columns of the butterfly matrix belong to each (key, axis) of `spec.members(group)`, in order."""
    n = spec.size(params, group)
    slices, start = [], 0
    for key, axis in spec.members(group):
        width = spec.span(params, key, axis, group)[1] * params[key].numel() // params[key].shape[axis] // n
        slices.append(slice(start, start + width))
        start += width
    return slices


def from_butterflies(params: Params, spec: Spec, group: str, units: torch.Tensor) -> Params:
    """Write an (n, D) butterfly matrix back into a copy of `params` (other tensors untouched)."""
    out = dict(params)
    for (key, axis), cols in zip(spec.members(group), butterfly_slices(params, spec, group)):
        out[key] = spec.with_units(out, key, axis, group, units[:, cols].contiguous())
    return out
