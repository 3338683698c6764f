"""Swap legs: the legs of a permutation stage, each trading two units of one group.

A stage takes `permute(base, {group: order_0})` back to `base` by swaps: leg k moves the unit that
belongs at position i from position j to i (and the unit at i to j) along a straight line, so every
breakpoint is a permutation of the base and computes its function; only the midpoints differ, by two
units out of n. A cycle of length c takes c − 1 swaps, so a stage has n − #cycles legs.

A 2000-unit network has about 2000 swap legs, so the legs hold no parameters: each breakpoint is
rebuilt on demand from the stage's shared base and the unit order at that step. Orders are kept at
every √n-th step and replayed from there: O(√n) swaps per breakpoint, O(n√n) memory. An evaluator
reads a swap leg's two units to update the base's activations instead of running a forward pass.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

from lowloss.nets.params import Params
from lowloss.nets.spec import Spec, permute
from lowloss.paths import SWAP_LEG_PREFIX
from lowloss.paths.legs import Leg

CACHED_BREAKPOINTS = 3


@dataclass(frozen=True)
class PermutationStage:
    """Swaps that take `permute(base, {group: order_0})` to `base` for one hidden-unit group.

    `positions[k]` = (i, j), the positions leg k swaps; `units[k]` = the base units at i and j when leg
    k starts; `checkpoints[c]` = the unit order before leg c·stride.
    """

    base: Params
    spec: Spec
    group: str
    positions: Tensor
    units: Tensor
    checkpoints: Tensor
    stride: int
    recent: dict[int, Params] = field(default_factory=dict, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.positions)

    def order(self, step: int) -> Tensor:
        """Unit order before leg `step` (0 ≤ step ≤ len): position p holds base unit order[p]."""
        order = self.checkpoints[step // self.stride].clone()
        for i, j in self.positions[step - step % self.stride : step].tolist():
            order[[i, j]] = order[[j, i]]
        return order

    def params(self, step: int) -> Params:
        """The breakpoint before leg `step`; after the last leg it is `base` itself.

        The last few are cached: a leg's end is the next leg's start, and callers index tensors one
        key at a time.
        """
        if step == len(self):
            return self.base
        if step not in self.recent:
            if len(self.recent) >= CACHED_BREAKPOINTS:
                del self.recent[next(iter(self.recent))]
            self.recent[step] = permute(self.base, self.spec, {self.group: self.order(step)})
        return self.recent[step]

    def legs(self) -> list[Leg]:
        return [SwapLeg(self, step) for step in range(len(self))]


class SwapLeg(Leg):
    """Leg `step` of a permutation stage, evaluated at its midpoint; breakpoints are built on demand.

    Along it, base units `units` = (u, v) of group `swaps.group` trade places: enough for an evaluator
    to update the base's activations (`swaps.base`) instead of running a forward pass.
    """

    def __init__(self, swaps: PermutationStage, step: int):
        self.swaps, self.step = swaps, step
        self.name, self.fn, self.eval_ts, self.stage = f"{SWAP_LEG_PREFIX}{swaps.group}-{step}", None, (0.5,), 0

    @property
    def units(self) -> tuple[int, int]:
        u, v = self.swaps.units[self.step].tolist()
        return u, v

    @property
    def start(self) -> Params:
        return self.swaps.params(self.step)

    @property
    def end(self) -> Params:
        return self.swaps.params(self.step + 1)


def permutation_stage(base: Params, spec: Spec, group: str, perm: Tensor) -> PermutationStage:
    """The swaps from `permute(base, {group: perm})` back to `base` (perm[i] = base unit at position i)."""
    order = perm.tolist()
    where = [0] * len(order)
    for position, unit in enumerate(order):
        where[unit] = position
    stride = max(1, math.isqrt(len(order)))
    positions, units, checkpoints = [], [], []
    for i in range(len(order)):
        if order[i] == i:
            continue
        if len(positions) % stride == 0:
            checkpoints.append(list(order))
        j, moved = where[i], order[i]
        positions.append((i, j))
        units.append((moved, i))
        order[i], order[j] = i, moved
        where[i], where[moved] = i, j
    if len(positions) % stride == 0:
        checkpoints.append(list(order))
    return PermutationStage(
        base,
        spec,
        group,
        torch.tensor(positions, dtype=torch.int64).reshape(-1, 2),
        torch.tensor(units, dtype=torch.int64).reshape(-1, 2),
        torch.tensor(checkpoints, dtype=torch.int64),
        stride,
    )
