"""The permutation stage of §3.4 and the `ot` method: a straight leg to the matched Θ^B, then one leg per swap.

After the OT leg the network is Θ^B with its units in A's order. The stage restores B's order by
swaps: leg k moves the unit that belongs at position i from position j to i (and the unit at i to j)
along a straight line, so every breakpoint is a permutation of Θ^B and computes its function; only the
midpoints differ, by two units out of n. A cycle of length c takes c − 1 swaps, so a stage has
n − #cycles legs.

A 2000-unit network has about 2000 swap legs, so the legs hold no parameters: each breakpoint is
rebuilt on demand from the stage's shared base and the unit order at that step. Orders are kept at
every √n-th step and replayed from there: O(√n) swaps per breakpoint, O(n√n) memory.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

from lowloss.connect.context import Context
from lowloss.connect.matching import matching_for, sequential_matching
from lowloss.connect.path import Leg, Path
from lowloss.spec import Params, Spec, permute

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
        for i, j in self.positions[step - step % self.stride:step].tolist():
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
        self.name, self.fn, self.eval_ts, self.stage = f"swap-{swaps.group}-{step}", None, (0.5,), 0

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
    return PermutationStage(base, spec, group, torch.tensor(positions, dtype=torch.int64).reshape(-1, 2),
                            torch.tensor(units, dtype=torch.int64).reshape(-1, 2),
                            torch.tensor(checkpoints, dtype=torch.int64), stride)


def permutation_legs(theta_b: Params, spec: Spec, perms: dict[str, Tensor]) -> list[Leg]:
    """Swap legs from `permute(theta_b, spec, perms)` to Θ^B, one group after the other.

    Groups on different axes commute, so the stage of group k works on Θ^B with only the later
    groups still permuted; the last stage ends at Θ^B itself.
    """
    groups = list(perms)
    legs: list[Leg] = []
    for k, group in enumerate(groups):
        base = permute(theta_b, spec, {g: perms[g] for g in groups[k + 1:]})
        legs += permutation_stage(base, spec, group, perms[group]).legs()
    return legs


def matched_legs(theta_a: Params, theta_b: Params, spec: Spec, perms: dict[str, Tensor], name: str = "ot"
                 ) -> list[Leg]:
    """A straight leg Θ^A -> Θ^B with its units in A's order, then the permutation stages back to Θ^B."""
    return [Leg(theta_a, permute(theta_b, spec, perms), name), *permutation_legs(theta_b, spec, perms)]


def ot_matching(method: str, theta_a: Params, theta_b: Params, ctx: Context) -> tuple[dict[str, Tensor], None]:
    """The matching `ot` uses (it depends on the endpoints alone)."""
    return sequential_matching(theta_a, theta_b, ctx.spec, ctx.options.ot_solver), None


def ot_path(method: str, theta_a: Params, theta_b: Params, ctx: Context) -> Path:
    """§3.4 for a whole network: every group OT-matched in turn, a straight leg, then the swaps."""
    perms = matching_for(method, ctx, theta_b, lambda: ot_matching(method, theta_a, theta_b, ctx)[0])
    return Path(matched_legs(theta_a, theta_b, ctx.spec, perms))
