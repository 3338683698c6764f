"""The adaptive grid of `--points auto`: a coarse grid on every leg, then a golden-section search in the lowest
bracket of each split until its worst point is located within `TOLERANCE` in t.

A worst point is what the paper reports, and most of a path is far from it: the fixed grid spends as many
points on every leg as on the worst one. Accuracy along a leg is a step function of t, so points are
compared by accuracy, then by loss (of two points of equal accuracy the one of higher loss is the worse): the
search follows the loss where accuracies tie. Torch-free, so that the command line can name its values.
"""

from __future__ import annotations

import math
from collections.abc import Callable

AUTO = "auto"
"""`--points auto`: the adaptive grid instead of a fixed number of points per leg."""
COARSE_POINTS = 5
"""Evenly spaced t per leg before the search (steps of 0.25)."""
TOLERANCE = 0.1
"""Width in t of the bracket the search ends on: that of the bracket the 21-point grid's lowest point leaves (its
two neighbours, two steps apart), so the search brackets the worst point as tightly as the grid does, with three
evaluated points in it (its ends and the lowest) as the grid has. Chosen on the training split: on the twelve
digits paths of `benchmarks/bench_cheapest.py` a bracket of 0.1 finds the same worst train accuracy as one of
0.05 on eleven and one training sample higher on the twelfth (fc3's straight leg, both below the grid's), at 1–4
fewer evaluations per split."""
GOLDEN = (3 - math.sqrt(5)) / 2
"""The golden-section step: the share of the larger part of the bracket where the next point is evaluated."""

Key = tuple[float, float]
"""How bad a point is: (accuracy, −loss); lower is worse."""


def search_steps(coarse_points: int = COARSE_POINTS, tolerance: float = TOLERANCE) -> int:
    """Points the search evaluates in a bracket of two coarse steps when the worst point is inside it (one more
    per step when it lies at the bracket's end): the bracket shrinks by 1 − GOLDEN at each point."""
    width = 2 / (coarse_points - 1)
    return max(0, math.ceil(math.log(tolerance / width) / math.log(1 - GOLDEN)))


def golden_search(key: Callable[[float], Key], a: float, x: float, b: float, tolerance: float = TOLERANCE) -> float:
    """The t of lowest `key` in [a, b], from a bracket whose x (a ≤ x ≤ b) is the lowest point evaluated so far;
    each new t is evaluated once by `key` (which should remember what it evaluated). Assumes `key` has one
    minimum in the bracket, as around the lowest point of a grid; otherwise it finds a local one, never a
    point worse than x."""
    if not a <= x <= b:
        raise ValueError(f"the bracket [{a}, {b}] does not hold its lowest point {x}")
    key_x = key(x)
    while b - a > tolerance:
        u = x - GOLDEN * (x - a) if x - a > b - x else x + GOLDEN * (b - x)
        key_u = key(u)
        if key_u < key_x:
            a, b = (a, x) if u < x else (x, b)
            x, key_x = u, key_u
        else:
            a, b = (u, b) if u < x else (a, u)
    return x
