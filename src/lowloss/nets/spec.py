"""Architecture specs: which hidden-unit group every parameter axis belongs to.

After git-re-basin's permutation specs: each architecture declares, once, a mapping
state-dict key -> tuple naming the hidden-unit group on each axis (or None). Everything that treats
neurons as samples (butterfly vectors, OT, permutations, weight adjustment) is written against a
Spec, never against a concrete architecture.

An axis may hold a group *times* a block of k entries: a linear layer after a flattened conv output
has in-features = channels x (h x w). Sizes come from the tensors, so such an axis is simply viewed as
(group, k) in torch's channel-major flatten order. An axis may also hold several groups side by side, a
tuple of groups: the layer after a `torch.cat` of two groups' outputs reads both (a DenseNet layer reads
every earlier layer of its block); each group then occupies its own block of the axis, in order.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import torch

from lowloss.nets.params import Params

Axis = str | tuple[str, ...] | None
"""What lies along one axis of a tensor: one group's units, several groups' units side by side, or none."""
Axes = tuple[Axis, ...]
STATISTICS = ("running_mean", "running_var", "num_batches_tracked")
"""A norm layer's running statistics: measured on data, not trained."""


@dataclass(frozen=True)
class Spec:
    """State-dict key -> hidden-unit group per axis. `groups` run from input to output."""

    axes: dict[str, Axes]

    @cached_property
    def _members(self) -> dict[str, list[tuple[str, int]]]:
        """Group -> every (key, axis) carrying it, groups in the order they first appear."""
        found: dict[str, list[tuple[str, int]]] = {}
        for key, key_axes in self.axes.items():
            for axis, entry in enumerate(key_axes):
                for group in axis_groups(entry):
                    found.setdefault(group, []).append((key, axis))
        return found

    @property
    def groups(self) -> list[str]:
        """Hidden-unit groups in the order they first appear (input side first)."""
        return list(self._members)

    def members(self, group: str) -> list[tuple[str, int]]:
        """Every (key, axis) that carries `group`: incoming rows, biases and outgoing columns."""
        if group not in self._members:
            raise KeyError(f"no hidden-unit group {group!r} in spec (groups: {self.groups})")
        return self._members[group]

    def incoming(self, group: str) -> list[str]:
        """Keys whose axis 0 is `group` alone (the weights, bias and norm tensors that compute its units)."""
        return [key for key, axis in self.members(group) if axis == 0 and self.axes[key][0] == group]

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
            if all(g == group or g in matched for entry in self.axes[key] for g in axis_groups(entry))
        ]
        return self.restricted(dict.fromkeys(keys))

    def size(self, params: Params, group: str) -> int:
        """Number of units in `group`, read off the tensors: the shortest axis 0 of the keys that compute it (a
        depthwise conv with a channel multiplier m carries each unit m times)."""
        return min(params[key].shape[0] for key in self.incoming(group))

    def span(self, params: Params, key: str, axis: int, group: str) -> tuple[int, int]:
        """(start, length) of `group`'s block on `axis` of tensor `key`: the whole axis for one group, else
        its place among the groups side by side (each unit takes the same number of entries)."""
        entry, length = self.axes[key][axis], params[key].shape[axis]
        if isinstance(entry, str):
            return 0, length
        sizes = [self.size(params, g) for g in entry]
        per_unit = length // sum(sizes)
        return per_unit * sum(sizes[: entry.index(group)]), per_unit * sizes[entry.index(group)]

    def units(
        self, params: Params, key: str, axis: int, group: str, tensor: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The entries of `group`'s units in tensor `key` (or `tensor`, shaped like it) along `axis`, one row per
        unit: (n, -1)."""
        start, length = self.span(params, key, axis, group)
        tensor = params[key] if tensor is None else tensor
        return unit_view(tensor.narrow(axis, start, length), axis, self.size(params, group))

    def with_units(self, params: Params, key: str, axis: int, group: str, units: torch.Tensor) -> torch.Tensor:
        """Tensor `key` with `group`'s block along `axis` replaced by `units` (laid out as `units` gives them)."""
        start, length = self.span(params, key, axis, group)
        return _with_block(
            params[key], axis, start, length, from_unit_view(units, params[key].narrow(axis, start, length), axis)
        )

    def permuted(
        self, params: Params, key: str, perms: dict[str, torch.Tensor], skip: tuple[int, str] | None = None
    ) -> torch.Tensor:
        """Tensor `key` with the units of every group in `perms` reordered on every axis that carries it, but the
        (axis, group) in `skip`: unit i of the result is unit `perms[group][i]`. One gather per axis."""
        tensor = params[key]
        for axis, entry in enumerate(self.axes[key]):
            moved = [group for group in axis_groups(entry) if group in perms and (axis, group) != skip]
            if moved:
                index = torch.arange(tensor.shape[axis])
                for group in moved:
                    start, length = self.span(params, key, axis, group)
                    per_unit = length // self.size(params, group)
                    entries = perms[group].cpu()[:, None] * per_unit + torch.arange(per_unit)
                    index[start : start + length] = start + entries.flatten()
                tensor = tensor.index_select(axis, index.to(tensor.device))
        return tensor


def _with_block(tensor: torch.Tensor, axis: int, start: int, length: int, block: torch.Tensor) -> torch.Tensor:
    """`tensor` with entries [start, start + length) of `axis` replaced by `block`."""
    if length == tensor.shape[axis]:
        return block
    end = tensor.shape[axis] - start - length
    return torch.cat([tensor.narrow(axis, 0, start), block, tensor.narrow(axis, start + length, end)], axis)


def axis_groups(entry: Axis) -> tuple[str, ...]:
    """The groups along one axis, in order: none, one, or several side by side."""
    if entry is None:
        return ()
    return (entry,) if isinstance(entry, str) else tuple(entry)


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
    """Reorder the units of each group: unit i of the result is unit `perms[group][i]` of `params`.

    A permutation of hidden units leaves the network's function unchanged; this is what every
    distributional method relies on.
    """
    keys = dict.fromkeys(key for group in perms for key, _ in spec.members(group))
    return {**params, **{key: spec.permuted(params, key, perms) for key in keys}}


def permute_axis(tensor: torch.Tensor, axis: int, n_units: int, perm: torch.Tensor) -> torch.Tensor:
    """`tensor` with the n_units units on `axis` reordered: unit i of the result is unit perm[i]."""
    units = unit_view(tensor, axis, n_units)
    return from_unit_view(units[perm.to(units.device)], tensor, axis)
