"""Git Re-Basin's weight matching (Ainsworth et al. 2023, Algorithm 1): permutation coordinate descent over
every hidden-unit group of a spec, then the same path as `ot`.

Weight matching looks for the permutations π of Θ^B's groups that maximise Σ_keys ⟨W_A, π(W_B)⟩, the inner
product of the two networks' parameters. With every other group held fixed, the objective is linear in
one group's permutation: Σ over the tensors that touch the group of W_A (unit rows) · π_others(W_B)ᵀ is a
score matrix, and the best permutation is one linear assignment (SciPy's `linear_sum_assignment`). The
groups are visited in an order drawn from a seeded generator, sweep after sweep, until a whole sweep
improves nothing: a fixed point (or until a budget of sweeps, `--wm-sweeps`, is spent). A group on two axes
of one tensor (a square layer inside a residual stream) is not linear in its own permutation: its assignment is
taken only when it raises the objective, which keeps descent from cycling between assignments that merely look
better. Descent starts where each group, input side first, is matched on the entries its already matched
predecessors align, not at the identity as in Git Re-Basin: from the identity it can stop at a poorer fixed
point (half a planted permutation's objective on a random MobileNet-V3; 30300 against 30315 on two random
ResNet-50s).

It matches on the parameters only (weights, biases, normalisation scales and shifts), not on BatchNorm's
running statistics, as Git Re-Basin does. A residual stream's group touches every block of its stage, so
its score sums all of them. Coordinate descent itself is written here because no maintained library
offers it for an arbitrary permutation spec; each step is SciPy's solver.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor

from lowloss.errors import LowlossError
from lowloss.methods.context import MAX_SWEEPS, Context
from lowloss.methods.matching import matching_for
from lowloss.methods.permutation import matched_legs
from lowloss.nets.params import Params
from lowloss.nets.spec import Spec, axis_groups, permute, unit_view
from lowloss.paths.legs import Path

log = logging.getLogger(__name__)
MATCHED_ON = "parameters (weights, biases, normalisation scales and shifts)"


def weight_matching(
    theta_a: Params,
    theta_b: Params,
    spec: Spec,
    seed: int = 0,
    max_sweeps: int = MAX_SWEEPS,
    start: dict[str, Tensor] | None = None,
) -> tuple[dict[str, Tensor], int]:
    """({group: perm}, sweeps): unit i of the matched Θ^B is unit perm[i] of Θ^B, for every group of `spec`.

    Starts from `start` (default: the identity); each sweep visits the groups in a fresh order drawn from
    `seed` and stops when a sweep leaves every permutation as it was (or after `max_sweeps`).
    """
    scores = Scores(theta_a, theta_b, spec, start)
    rng = np.random.default_rng(seed)
    for sweep in range(1, max_sweeps + 1):
        improved = False
        for index in rng.permutation(len(spec.groups)):
            group = spec.groups[index]
            if not scores.changed(group):
                continue  # the same scores as at its last visit: the same assignment, no improvement
            matrix = scores.of(group)
            best = torch.as_tensor(linear_sum_assignment(matrix, maximize=True)[1], dtype=torch.int64)
            if group in scores.self_reading:
                improved |= scores.try_set(group, best)
                continue
            rows = np.arange(len(matrix))
            if matrix[rows, best.numpy()].sum() > matrix[rows, scores.perms[group].numpy()].sum() + 1e-12:
                scores.set(group, best)
                improved = True
        if not improved:
            return scores.perms, sweep
    return scores.perms, max_sweeps


def aligned_start(theta_a: Params, theta_b: Params, spec: Spec) -> dict[str, Tensor]:
    """A start for coordinate descent: each group in turn, input side first, matched by the same score on the
    entries its already matched predecessors align (the incoming rows, biases and norms). It recovers a
    planted permutation of every group, where descent from the identity can stop at a poorer fixed point
    (MobileNet's chains of narrow layers)."""
    scores = Scores(theta_a, theta_b, spec)
    for k, group in enumerate(spec.groups):
        matrix = scores.of(group, set(spec.aligned(group, spec.groups[:k]).axes))
        scores.set(group, torch.as_tensor(linear_sum_assignment(matrix, maximize=True)[1], dtype=torch.int64))
    return scores.perms


def match_weights(
    theta_a: Params, theta_b: Params, spec: Spec, seed: int = 0, sweeps: int | None = None
) -> dict[str, Tensor]:
    """Weight matching: coordinate descent from the aligned start, to its fixed point or for at most `sweeps`
    sweeps (0: the aligned start itself, one assignment per group: on two random ResNet-50s already a higher
    objective than Git Re-Basin's descent from the identity reaches, at a sixth of the fixed point's cost)."""
    start = aligned_start(theta_a, theta_b, spec)
    if sweeps == 0:
        return start
    perms, done = weight_matching(theta_a, theta_b, spec, seed, sweeps or MAX_SWEEPS, start=start)
    log.info("weight matching stopped after %d sweeps", done)
    return perms


def objective(theta_a: Params, theta_b: Params, spec: Spec, perms: dict[str, Tensor]) -> float:
    """Σ over the spec's tensors of ⟨W_A, π(W_B)⟩: what weight matching maximises."""
    matched = permute(theta_b, spec, perms)
    return sum(float((theta_a[key].double() * matched[key].double()).sum()) for key in spec.axes)


class Scores:
    """The score matrices of weight matching, kept up to date as permutations change.

    A group's score matrix is a sum of parts, one per tensor axis that carries the group: A's units there against
    B's, B's other axes in A's order by the current permutations. A part changes only when a permutation of
    another group on the same tensor changes, and then only by the entries that permutation moved, so a group's
    matrix is computed once and then corrected by the products over the moved entries alone (a sweep moves about
    a tenth of a group's units on two random ResNet-50s). B's tensors are kept in the current order (a
    permutation that changes re-orders only the tensors of its group). Products run in float32, the kept
    matrices and their corrections in float64, on the CPU.
    """

    def __init__(self, theta_a: Params, theta_b: Params, spec: Spec, start: dict[str, Tensor] | None = None):
        for group in spec.groups:
            if spec.size(theta_a, group) != spec.size(theta_b, group):
                raise LowlossError(
                    f"cannot match group {group!r}: {spec.size(theta_a, group)} units against "
                    f"{spec.size(theta_b, group)}"
                )
        self.spec = spec
        self.a, self.b = (
            {key: theta[key].detach().to("cpu", torch.float32) for key in spec.axes} for theta in (theta_a, theta_b)
        )
        self.perms = {group: torch.arange(spec.size(self.a, group)) for group in spec.groups} | dict(start or {})
        self.b_now = {key: spec.permuted(self.b, key, self.perms) for key in spec.axes}
        self.parts: dict[str, list[Part]] = {group: [] for group in spec.groups}
        self.readers: dict[str, list[Part]] = {group: [] for group in spec.groups}
        self.kept: dict[str, Tensor | None] = dict.fromkeys(spec.groups)
        """Each group's score matrix (columns in B's original order) once computed in full."""
        self.stale = set(spec.groups)
        """The groups whose matrix changed since it was last read."""
        for group in spec.groups:
            n = len(self.perms[group])
            for key, axis in spec.members(group):
                start, length = spec.span(self.a, key, axis, group)
                a_units = unit_view(self.a[key].narrow(axis, start, length), axis, n).contiguous()
                part = Part(group, key, axis, start, length, a_units)
                self.parts[group].append(part)
                for other_axis, entry in enumerate(spec.axes[key]):
                    for other in axis_groups(entry):
                        if (other_axis, other) != (axis, group) and part not in self.readers[other]:
                            self.readers[other].append(part)
        self.self_reading = {group for group in spec.groups if any(p.group == group for p in self.readers[group])}
        """Groups on two axes of one tensor (a square layer inside a residual stream): their score matrix depends on
        their own permutation, so an assignment that is better on it need not raise the objective."""

    def set(self, group: str, perm: Tensor) -> None:
        """Take `perm` for `group`: re-order the tensors that carry it and correct the matrices that read its
        order."""
        self.perms[group] = perm
        before = {}
        for key in dict.fromkeys(key for key, _ in self.spec.members(group)):
            before[key], self.b_now[key] = self.b_now[key], self.spec.permuted(self.b, key, self.perms)
        for part in self.readers[group]:
            kept = self.kept[part.group]
            if part.group == group:
                self.kept[group] = None  # the group on two axes of one tensor: its own order moved too
            elif kept is not None:
                after, earlier = self.units(part, self.b_now[part.key]), self.units(part, before[part.key])
                moved = (after != earlier).any(0).nonzero().squeeze(1)
                if len(moved):
                    # B's units are rows in the group's current order; the matrix's columns in B's original order
                    change = (after[:, moved] - earlier[:, moved])[self.original(part.group)]
                    kept.addmm_(part.a_units[:, moved].double(), change.double().T)
            self.stale.add(part.group)

    def try_set(self, group: str, perm: Tensor) -> bool:
        """Take `perm` for `group` if it raises the objective (Σ over the group's tensors of ⟨W_A, π(W_B)⟩), else
        keep the current one; whether it was taken."""
        previous, before = self.perms[group], self.objective_of(group)
        self.set(group, perm)
        if self.objective_of(group) > before + 1e-9 * max(1.0, abs(before)):
            return True
        self.set(group, previous)
        return False

    def objective_of(self, group: str) -> float:
        """Σ over the tensors that carry `group` of ⟨W_A, W_B⟩, B in the current order."""
        keys = dict.fromkeys(key for key, _ in self.spec.members(group))
        return sum(float((self.a[key].double() * self.b_now[key].double()).sum()) for key in keys)

    def changed(self, group: str) -> bool:
        """Whether the group's matrix changed since it was last read (or was never computed)."""
        return group in self.stale

    def units(self, part: Part, b_tensor: Tensor) -> Tensor:
        """(n, rest): B's units of the part's group on its axis of `b_tensor`, in the group's current order."""
        n = len(self.perms[part.group])
        return unit_view(b_tensor.narrow(part.axis, part.start, part.length), part.axis, n)

    def original(self, group: str) -> Tensor:
        """Indices that put rows in the group's current order back in B's original order."""
        return torch.argsort(self.perms[group])

    def of(self, group: str, keys: set[str] | None = None) -> np.ndarray:
        """(n, n) float64: entry (i, j) is the inner product of A's unit i with B's unit j over every tensor that
        touches `group` (or those of them in `keys`, computed afresh), B's other axes in A's order by the current
        permutations."""
        if keys is None:
            self.stale.discard(group)  # a subset of the parts leaves the whole matrix unread
        if keys is None and self.kept[group] is not None:
            return self.kept[group].numpy()
        n, back = len(self.perms[group]), self.original(group)
        total = torch.zeros(n, n, dtype=torch.float64)
        for part in self.parts[group]:
            if keys is None or part.key in keys:
                total += part.a_units @ self.units(part, self.b_now[part.key])[back].T
        if keys is None:
            self.kept[group] = total
        return total.numpy()


@dataclass(frozen=True, eq=False)
class Part:
    """One tensor axis's share of a group's scores: where the group lies on it and A's units there."""

    group: str
    key: str
    axis: int
    start: int
    length: int
    a_units: Tensor


def matching_settings(ctx: Context) -> dict:
    """What the matching depends on besides the endpoints (recorded in its file, checked by `connect`); a budget of
    sweeps only when one is set, so that files matched to the fixed point keep their settings."""
    sweeps = {} if ctx.options.wm_sweeps is None else {"sweeps": ctx.options.wm_sweeps}
    return {"matched_on": MATCHED_ON, "order_seed": ctx.options.seed, **sweeps}


def weight_matching_matcher(method: str, theta_a: Params, theta_b: Params, ctx: Context) -> tuple[dict, dict]:
    """The matching `weight-matching` uses and the settings it depends on."""
    perms = match_weights(theta_a, theta_b, ctx.spec.trained(), ctx.options.seed, ctx.options.wm_sweeps)
    return perms, matching_settings(ctx)


def weight_matching_path(method: str, theta_a: Params, theta_b: Params, ctx: Context) -> Path:
    """Weight matching of every group, a straight leg to the matched Θ^B, then the permutation stage (§3.4)."""
    perms = matching_for(
        method, ctx, theta_b, lambda: weight_matching_matcher(method, theta_a, theta_b, ctx)[0], matching_settings(ctx)
    )
    return Path(matched_legs(theta_a, theta_b, ctx.spec, perms, name="matched"))
