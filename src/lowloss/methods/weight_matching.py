"""Git Re-Basin's weight matching (Ainsworth et al. 2023, Algorithm 1): permutation coordinate descent over
every hidden-unit group of a spec, then the same path as `ot`.

Weight matching looks for the permutations π of Θ^B's groups that maximise Σ_keys ⟨W_A, π(W_B)⟩, the inner
product of the two networks' parameters. With every other group held fixed, the objective is linear in
one group's permutation: Σ over the tensors that touch the group of W_A (unit rows) · π_others(W_B)ᵀ is a
score matrix, and the best permutation is one linear assignment (SciPy's `linear_sum_assignment`). The
groups are visited in an order drawn from a seeded generator, sweep after sweep, until a whole sweep
improves nothing: a fixed point.

It matches on the parameters only (weights, biases, normalisation scales and shifts), not on BatchNorm's
running statistics, as Git Re-Basin does. A residual stream's group touches every block of its stage, so
its score sums all of them. Coordinate descent itself is written here because no maintained library
offers it for an arbitrary permutation spec; each step is SciPy's solver.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor

from lowloss.errors import LowlossError
from lowloss.methods.context import Context
from lowloss.methods.matching import matching_for
from lowloss.methods.permutation import matched_legs
from lowloss.nets.params import Params
from lowloss.nets.spec import Spec, permute_axis, unit_view
from lowloss.paths.legs import Path

log = logging.getLogger(__name__)
MAX_SWEEPS = 100
MATCHED_ON = "parameters (weights, biases, normalisation scales and shifts)"


def weight_matching(
    theta_a: Params, theta_b: Params, spec: Spec, seed: int = 0, max_sweeps: int = MAX_SWEEPS
) -> tuple[dict[str, Tensor], int]:
    """({group: perm}, sweeps): unit i of the matched Θ^B is unit perm[i] of Θ^B, for every group of `spec`.

    Starts from the identity; each sweep visits the groups in a fresh order drawn from `seed` and stops
    when a sweep leaves every permutation as it was (or after `max_sweeps`).
    """
    sizes = {group: spec.size(theta_a, group) for group in spec.groups}
    for group, n in sizes.items():
        if spec.size(theta_b, group) != n:
            raise LowlossError(f"cannot match group {group!r}: {n} units against {spec.size(theta_b, group)}")
    perms = {group: torch.arange(n) for group, n in sizes.items()}
    rng = np.random.default_rng(seed)
    for sweep in range(1, max_sweeps + 1):
        improved = False
        for index in rng.permutation(len(sizes)):
            group = spec.groups[index]
            scores = group_scores(theta_a, theta_b, spec, group, perms, sizes)
            best = torch.as_tensor(linear_sum_assignment(scores, maximize=True)[1], dtype=torch.int64)
            rows = np.arange(len(scores))
            if scores[rows, best.numpy()].sum() > scores[rows, perms[group].numpy()].sum() + 1e-12:
                perms[group], improved = best, True
        if not improved:
            return perms, sweep
    return perms, max_sweeps


def group_scores(
    theta_a: Params, theta_b: Params, spec: Spec, group: str, perms: dict[str, Tensor], sizes: dict[str, int]
) -> np.ndarray:
    """(n, n) float64: entry (i, j) is the inner product of A's unit i with B's unit j over every tensor that
    touches `group`, B's other axes already in A's order by the current permutations."""
    n = sizes[group]
    total = torch.zeros(n, n, dtype=torch.float64)
    for key, axis in spec.members(group):
        w_b = theta_b[key]
        for other_axis, other in enumerate(spec.axes[key]):
            if other is not None and other_axis != axis:
                w_b = permute_axis(w_b, other_axis, sizes[other], perms[other])
        a_units = unit_view(theta_a[key], axis, n).double().cpu()
        total += a_units @ unit_view(w_b, axis, n).double().cpu().T
    return total.numpy()


def matching_settings(ctx: Context) -> dict:
    """What the matching depends on besides the endpoints (recorded in its file, checked by `connect`)."""
    return {"matched_on": MATCHED_ON, "order_seed": ctx.options.seed}


def weight_matching_matcher(method: str, theta_a: Params, theta_b: Params, ctx: Context) -> tuple[dict, dict]:
    """The matching `weight-matching` uses and the settings it depends on."""
    perms, sweeps = weight_matching(theta_a, theta_b, ctx.spec.trained(), ctx.options.seed)
    log.info("weight matching reached its fixed point after %d sweeps", sweeps)
    return perms, matching_settings(ctx)


def weight_matching_path(method: str, theta_a: Params, theta_b: Params, ctx: Context) -> Path:
    """Weight matching of every group, a straight leg to the matched Θ^B, then the permutation stage (§3.4)."""
    perms = matching_for(
        method, ctx, theta_b, lambda: weight_matching_matcher(method, theta_a, theta_b, ctx)[0], matching_settings(ctx)
    )
    return Path(matched_legs(theta_a, theta_b, ctx.spec, perms, name="matched"))
