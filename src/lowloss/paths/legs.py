"""A path is an ordered list of legs; a leg maps t in [0, 1] to a full parameter set.

Every leg returns its breakpoints *exactly* at t = 0 and t = 1 (checked in one place, `Leg.at`), so a
path built from legs starts at Θ^A and ends at Θ^B bit for bit. Points are produced in batches: `at`
takes a vector of t and returns every tensor stacked along a new leading axis, ready for `vmap`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch

from lowloss.nets.params import Params


def interpolate(theta_a: Params, theta_b: Params, t: torch.Tensor) -> Params:
    """(1 - t) θ_A + t θ_B for a vector of t, stacked; exact at t = 0 and 1 in floating point.

    A tensor equal at both ends is that tensor at every t, bit for bit ((1 - t) a + t a rounds away from a):
    what the evaluation finds unchanged along a leg it runs once for all points."""
    out = {}
    for key, a in theta_a.items():
        b = theta_b[key]
        if a is b or torch.equal(a, b):
            out[key] = a.expand(len(t), *a.shape).clone()
            continue
        t_key = t.reshape(-1, *([1] * a.dim())).to(a)
        out[key] = (1 - t_key) * a + t_key * b
    return out


@dataclass
class Leg:
    """One piece of a path: `start` at t = 0, `end` at t = 1, `fn(t) -> stacked params` between.

    `fn` defaults to the straight segment. `eval_ts` overrides the evaluation grid (a permutation-stage
    swap is evaluated at its midpoint only). `stage` numbers the route's stage the leg belongs to
    (§4.1: stage k runs from Θ_k^AB to Θ_{k+1}^AB, Θ_1^AB = Θ^A); 0 for methods without a route.
    """

    start: Params
    end: Params
    name: str = "leg"
    fn: Callable[[torch.Tensor], Params] | None = None
    eval_ts: tuple[float, ...] | None = None
    stage: int = 0

    def at(self, t: torch.Tensor | Sequence[float]) -> Params:
        """Stacked parameters at each t; rows with t == 0 or t == 1 are the breakpoints themselves, and `fn` is
        called for the other rows only (a weight-adjusted leg's fn fits least squares per point: its ends are
        known)."""
        t = torch.as_tensor(t, dtype=torch.float64).flatten()
        if self.fn is None:
            return interpolate(self.start, self.end, t)
        ends = (t == 0) | (t == 1)
        if not ends.any():
            return self.fn(t)
        inner = self.fn(t[~ends]) if not ends.all() else self.start
        points = {}
        for key, like in inner.items():
            value = like.new_empty(len(t), *self.start[key].shape)
            if not ends.all():
                value[~ends] = like
            for breakpoint, rows in ((self.start, t == 0), (self.end, t == 1)):
                value[rows] = breakpoint[key].to(value)
            points[key] = value
        return points


@dataclass
class Path:
    """Ordered legs from Θ^A to Θ^B; `method` names what built it."""

    legs: list[Leg]
    method: str = ""

    def __post_init__(self) -> None:
        if not self.legs:
            raise ValueError("a path needs at least one leg")

    def __iter__(self) -> Iterator[Leg]:
        return iter(self.legs)

    def __len__(self) -> int:
        return len(self.legs)

    @property
    def theta_a(self) -> Params:
        return self.legs[0].start

    @property
    def theta_b(self) -> Params:
        return self.legs[-1].end

    def breakpoints(self) -> list[Params]:
        """Θ^A, every joint between legs, Θ^B."""
        return [self.legs[0].start] + [leg.end for leg in self.legs]

    def is_continuous(self) -> bool:
        """True when every leg ends exactly where the next one starts."""
        return all(
            all(torch.equal(prev.end[k], nxt.start[k]) for k in prev.end) for prev, nxt in zip(self.legs, self.legs[1:])
        )


def chain(breakpoints: Sequence[Params], names: Sequence[str] | None = None) -> list[Leg]:
    """Straight legs through consecutive breakpoints (a polyline in weight space)."""
    names = names or [f"leg{i}" for i in range(len(breakpoints) - 1)]
    return [Leg(a, b, name) for a, b, name in zip(breakpoints, breakpoints[1:], names)]


def in_stage(legs: Sequence[Leg], stage: int) -> list[Leg]:
    """The legs, marked as stage `stage` of a route."""
    for leg in legs:
        leg.stage = stage
    return list(legs)
