"""Optimal-transport unit matching (§3.4): find a permutation of B's units per group, save it, check it.

"Find" and "apply" are apart: a matching is {group: perm} (unit i of the matched network is unit
perm[i] of Θ^B), saved with the endpoints' hashes and the method it is for, and applied later by the
pure `lowloss.nets.spec.permute`. The cost is the squared Euclidean distance between the units' vectors
with uniform weights; for two clouds of equal size the optimal plan is a permutation (Birkhoff), so
POT's exact network simplex (`ot.emd`, as in the paper) and SciPy's assignment solver agree.

What a unit's vector holds depends on the method: `ot` matches whole networks group after group on
the entries that are already aligned (`Spec.aligned`); `*+wa` match a layer's rows (§3.5, §4.1);
`*+bfly` match a stage's butterflies. The route methods' matchings depend on the route's points,
hence on the data they were fitted on, which the file records and `connect` checks.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from lowloss.errors import LowlossError
from lowloss.methods.context import OT_SOLVERS, Context
from lowloss.methods.neurons import butterflies
from lowloss.nets.params import Params
from lowloss.nets.spec import Spec, permute
from lowloss.storage.file_kinds import MATCHING, require_meta_kind
from lowloss.storage.weights import Artifact, save_weights

PREFIX = "perm."


def squared_distances(x: Tensor, y: Tensor) -> np.ndarray:
    """(n, n) cost ‖x_i − y_j‖² in float64 (the cost of the OT problem)."""
    x, y = x.double(), y.double()
    return torch.cdist(x, y).square_().cpu().numpy()


def ot_permutation(x: Tensor, y: Tensor, solver: str = "emd") -> Tensor:
    """Index perm with y[perm] matched to x: the optimal transport map between two equal-size clouds."""
    if solver not in OT_SOLVERS:
        raise LowlossError(f"unknown OT solver {solver!r} (known: {', '.join(OT_SOLVERS)})")
    if x.shape != y.shape:
        raise LowlossError(f"cannot match {tuple(x.shape)} neurons to {tuple(y.shape)}: sizes differ")
    cost = squared_distances(x, y)
    if solver == "scipy":
        from scipy.optimize import linear_sum_assignment

        rows, cols = linear_sum_assignment(cost)
        return torch.as_tensor(cols[np.argsort(rows)], dtype=torch.int64)
    import ot

    n = len(cost)
    uniform = np.full(n, 1.0 / n)
    plan = ot.emd(uniform, uniform, cost, numItermax=max(100_000, 50 * n * n))
    perm = plan.argmax(axis=1)
    if len(np.unique(perm)) != n:
        raise LowlossError(f"ot.emd did not return a permutation for {n} neurons (try --ot-solver scipy)")
    return torch.as_tensor(perm, dtype=torch.int64)


def match_group(theta_a: Params, theta_b: Params, spec: Spec, group: str, solver: str = "emd") -> Tensor:
    """OT permutation of `group`'s units of Θ^B onto Θ^A's, on the entries `spec` gives a unit."""
    return ot_permutation(butterflies(theta_a, spec, group), butterflies(theta_b, spec, group), solver)


def sequential_matching(
    theta_a: Params, theta_b: Params, spec: Spec, solver: str = "emd", groups: Sequence[str] | None = None
) -> dict[str, Tensor]:
    """Every group of a network (or just `groups`: the others are in the same order in both), input side first,
    each on the entries its matched predecessors align.

    Matching a group on entries that still carry an unmatched group's order would compare unrelated
    numbers; matching group after group in B's partly permuted basis recovers a planted permutation of
    every group. For one hidden group this is the paper's butterfly matching (§3.4).
    """
    groups = spec.groups if groups is None else list(groups)
    aligned_already = [group for group in spec.groups if group not in groups]
    perms: dict[str, Tensor] = {}
    for group in groups:
        aligned_b = permute(theta_b, spec, perms)
        perms[group] = match_group(theta_a, aligned_b, spec.aligned(group, [*aligned_already, *perms]), group, solver)
    return perms


def save_matching(
    path: str | os.PathLike,
    perms: dict[str, Tensor],
    method: str,
    endpoints: tuple[Artifact, Artifact],
    solver: str,
    fitted: dict | None = None,
    seconds: float | None = None,
) -> None:
    """Write the permutations with the method they are for, the endpoints' hashes, for route methods
    what their route was fitted on (dataset, samples, seed), and the seconds the matching took."""
    save_weights(
        path,
        {PREFIX + group: perm for group, perm in perms.items()},
        {
            "kind": MATCHING,
            "method": method,
            "solver": solver,
            "groups": list(perms),
            "fitted": fitted,
            "endpoint_a_sha256": endpoints[0].meta.get("sha256"),
            "endpoint_b_sha256": endpoints[1].meta.get("sha256"),
            "seconds": seconds,
        },
    )


def load_matching(
    matching: Artifact,
    method: str,
    ctx: Context,
    theta_b: Params,
    fitted: dict | None = None,
) -> dict[str, Tensor]:
    """The permutations of a matching file, checked against the method, the endpoints, the fit and the spec."""
    path, meta = matching.path, matching.meta
    require_meta_kind(path, meta, MATCHING)
    if meta.get("method") != method:
        raise LowlossError(
            f"{path}: matching was computed for method {meta.get('method')!r}, not {method!r} "
            f"(run `lowloss match --method {method}`)"
        )
    if ctx.endpoints is not None:
        computed_for = (meta.get("endpoint_a_sha256"), meta.get("endpoint_b_sha256"))
        if computed_for != tuple(artifact.meta.get("sha256") for artifact in ctx.endpoints):
            raise LowlossError(
                f"{path}: matching was computed for other endpoints "
                f"(run `lowloss match {ctx.endpoints[0].path} {ctx.endpoints[1].path}`)"
            )
    if meta.get("fitted") != fitted:
        raise LowlossError(f"{path}: matching was computed with {meta.get('fitted')}, this connection uses {fitted}")
    perms = {key.removeprefix(PREFIX): tensor.long() for key, tensor in matching.tensors.items()}
    spec = ctx.spec
    if set(perms) != set(spec.groups):
        raise LowlossError(f"{path}: matching covers groups {sorted(perms)}, the network has {spec.groups}")
    for group, perm in perms.items():
        n = spec.size(theta_b, group)
        if not torch.equal(perm.sort().values, torch.arange(n)):
            raise LowlossError(f"{path}: {PREFIX}{group} is not a permutation of {n} units")
    return perms


def matching_for(
    method: str, ctx: Context, theta_b: Params, compute: Callable[[], dict[str, Tensor]], fitted: dict | None = None
) -> dict[str, Tensor]:
    """The context's matching file when given (`--matching`), checked; else `compute()`."""
    if ctx.matching is not None:
        return load_matching(ctx.matching, method, ctx, theta_b, fitted)
    return compute()
