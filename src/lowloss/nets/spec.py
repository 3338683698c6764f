"""Architecture specs: which hidden-unit group every parameter axis belongs to.

After git-re-basin's permutation specs: each architecture declares, once, a mapping
state-dict key -> tuple naming the hidden-unit group on each axis (or None). Everything that treats
neurons as samples (butterfly vectors, OT, permutations, weight adjustment) is written against a
Spec, never against a concrete architecture.

An axis may hold a group *times* a block of k entries: a linear layer after a flattened conv output
has in-features = channels x (h x w). Sizes come from the tensors, so such an axis is simply viewed as
(group, k) in torch's channel-major flatten order.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lowloss.nets.params import Params

Axes = tuple[str | None, ...]
STATISTICS = ("running_mean", "running_var", "num_batches_tracked")
"""A norm layer's running statistics: measured on data, not trained."""


@dataclass(frozen=True)
class Spec:
    """State-dict key -> hidden-unit group per axis. `groups` run from input to output."""

    axes: dict[str, Axes]

    @property
    def groups(self) -> list[str]:
        """Hidden-unit groups in the order they first appear (input side first)."""
        seen: list[str] = []
        for key_axes in self.axes.values():
            for group in key_axes:
                if group is not None and group not in seen:
                    seen.append(group)
        return seen

    def members(self, group: str) -> list[tuple[str, int]]:
        """Every (key, axis) that carries `group`: incoming rows, biases and outgoing columns."""
        found = [(key, axis) for key, key_axes in self.axes.items() for axis, g in enumerate(key_axes) if g == group]
        if not found:
            raise KeyError(f"no hidden-unit group {group!r} in spec (groups: {self.groups})")
        return found

    def incoming(self, group: str) -> list[str]:
        """Keys whose axis 0 is `group` (the weights and bias that compute the group's units)."""
        return [key for key, axis in self.members(group) if axis == 0]

    def outgoing(self, group: str) -> list[str]:
        """Keys that read the group's units (the next layer's weights)."""
        return [key for key, axis in self.members(group) if axis != 0]

    def restricted(self, keys) -> Spec:
        """The spec of only these keys: a group's units then consist of just those tensors' entries."""
        return Spec({key: self.axes[key] for key in keys})

    def trained(self) -> Spec:
        """The spec of the trained tensors only, without BatchNorm's running statistics: what weight matching
        scores and arcs move (statistics follow their network, or are measured again at every point)."""
        return self.restricted([key for key in self.axes if key.rpartition(".")[2] not in STATISTICS])

    def aligned(self, group: str, matched) -> Spec:
        """The tensors of `group` whose other axes are free of groups not yet in `matched`.

        Matching one group after another, these are the entries of a unit that are comparable between
        two networks: incoming rows once the previous groups are matched, outgoing columns only where
        the next layer's rows belong to no unmatched group (the output layer).
        """
        keys = [
            key
            for key, _ in self.members(group)
            if all(g is None or g == group or g in matched for g in self.axes[key])
        ]
        return self.restricted(dict.fromkeys(keys))

    def size(self, params: Params, group: str) -> int:
        """Number of units in `group`, read off the tensors (axis 0 of an incoming key)."""
        return params[self.incoming(group)[0]].shape[0]


def dense(name: str, group_in: str | None, group_out: str | None, bias: bool = True) -> dict[str, Axes]:
    """Spec entries of an nn.Linear: weight is out x in."""
    entries: dict[str, Axes] = {f"{name}.weight": (group_out, group_in)}
    if bias:
        entries[f"{name}.bias"] = (group_out,)
    return entries


def conv(name: str, group_in: str | None, group_out: str | None, bias: bool = True) -> dict[str, Axes]:
    """Spec entries of an nn.Conv2d: weight is out x in x kh x kw; filters are the samples."""
    entries: dict[str, Axes] = {f"{name}.weight": (group_out, group_in, None, None)}
    if bias:
        entries[f"{name}.bias"] = (group_out,)
    return entries


def norm(name: str, group: str, running_stats: bool) -> dict[str, Axes]:
    """Spec entries of a per-channel normalisation: scale and shift, and BatchNorm's running statistics and
    its batch counter (a scalar of no group)."""
    tensors = ("weight", "bias", "running_mean", "running_var") if running_stats else ("weight", "bias")
    entries: dict[str, Axes] = {f"{name}.{tensor}": (group,) for tensor in tensors}
    if running_stats:
        entries[f"{name}.num_batches_tracked"] = ()
    return entries


def unit_view(tensor: torch.Tensor, axis: int, n_units: int) -> torch.Tensor:
    """View `tensor` with the units of a group on axis 0 and everything else flattened: (n, -1).

    The axis may be n_units x k (flattened conv features); the k entries of a unit stay together.
    """
    moved = tensor.movedim(axis, 0)
    if moved.shape[0] % n_units:
        raise ValueError(f"axis of size {moved.shape[0]} is not a multiple of the group size {n_units}")
    return moved.reshape(n_units, -1)


def from_unit_view(units: torch.Tensor, like: torch.Tensor, axis: int) -> torch.Tensor:
    """Inverse of `unit_view`: back to the shape and axis order of `like`."""
    moved_shape = like.movedim(axis, 0).shape
    return units.reshape(moved_shape).movedim(0, axis)


def permute(params: Params, spec: Spec, perms: dict[str, torch.Tensor]) -> Params:
    """Reorder the units of each group: unit i of the result is unit perms[group][i] of `params`.

    A permutation of hidden units leaves the network's function unchanged; this is what every
    distributional method relies on.
    """
    out = dict(params)
    for group, perm in perms.items():
        n = spec.size(params, group)
        for key, axis in spec.members(group):
            out[key] = permute_axis(out[key], axis, n, perm)
    return out


def permute_axis(tensor: torch.Tensor, axis: int, n_units: int, perm: torch.Tensor) -> torch.Tensor:
    """`tensor` with the n_units units on `axis` reordered: unit i of the result is unit perm[i]."""
    units = unit_view(tensor, axis, n_units)
    return from_unit_view(units[perm.to(units.device)], tensor, axis)
