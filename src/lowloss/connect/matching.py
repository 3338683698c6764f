"""Optimal-transport neuron matching (§3.4): find a permutation of B's hidden units, save it, check it.

"Find" and "apply" are apart: `find_matching` returns {group: perm} (unit i of the matched network is
unit perm[i] of Θ^B), which is saved with the endpoints' hashes and applied later by the pure
`lowloss.spec.permute`. The cost is the squared Euclidean distance between butterfly vectors with
uniform weights; for two clouds of equal size the optimal plan is a permutation (Birkhoff), so POT's
exact network simplex (`ot.emd`, as in the paper) and SciPy's assignment solver give the same matching.
"""

from __future__ import annotations

import os

import numpy as np
import torch
from torch import Tensor

from lowloss.artifacts import Artifact, save_weights
from lowloss.connect.neurons import butterflies
from lowloss.connect.registry import Context
from lowloss.errors import LowlossError
from lowloss.spec import Params, Spec

SOLVERS = ("emd", "scipy")
PREFIX = "perm."


def squared_distances(x: Tensor, y: Tensor) -> np.ndarray:
    """(n, n) cost ‖x_i − y_j‖² in float64 (the cost of the OT problem)."""
    x, y = x.double(), y.double()
    return torch.cdist(x, y).square_().cpu().numpy()


def ot_permutation(x: Tensor, y: Tensor, solver: str = "emd") -> Tensor:
    """Index perm with y[perm] matched to x: the optimal transport map between two equal-size clouds."""
    if solver not in SOLVERS:
        raise LowlossError(f"unknown OT solver {solver!r} (known: {', '.join(SOLVERS)})")
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


def find_matching(theta_a: Params, theta_b: Params, spec: Spec, solver: str = "emd") -> dict[str, Tensor]:
    """OT matching of B's hidden units to A's, per group, on butterfly vectors.

    Exact for one hidden group (the paper's §3.4); with several groups each is matched on its own
    butterflies, without re-reading the others' permutation.
    """
    return {group: ot_permutation(butterflies(theta_a, spec, group), butterflies(theta_b, spec, group), solver)
            for group in spec.groups}


def save_matching(path: str | os.PathLike, perms: dict[str, Tensor], endpoints: tuple[Artifact, Artifact],
                  solver: str) -> None:
    """Write the permutations with the endpoints' content hashes (so a matching is never reused by mistake)."""
    save_weights(path, {PREFIX + group: perm for group, perm in perms.items()},
                 {"kind": "matching", "solver": solver, "groups": list(perms),
                  "endpoint_a_sha256": endpoints[0].meta.get("sha256"),
                  "endpoint_b_sha256": endpoints[1].meta.get("sha256")})


def load_matching(matching: Artifact, endpoints: tuple[Artifact, Artifact] | None, theta_b: Params,
                  spec: Spec) -> dict[str, Tensor]:
    """The permutations of a matching file, checked against the endpoints and the spec."""
    path, meta = matching.path, matching.meta
    if meta.get("kind") != "matching":
        raise LowlossError(f"{path}: not a matching (kind {meta.get('kind')!r})")
    if endpoints is not None:
        fitted = (meta.get("endpoint_a_sha256"), meta.get("endpoint_b_sha256"))
        given = tuple(artifact.meta.get("sha256") for artifact in endpoints)
        if fitted != given:
            raise LowlossError(f"{path}: matching was computed for other endpoints "
                               f"(run `lowloss match {endpoints[0].path} {endpoints[1].path}`)")
    perms = {key.removeprefix(PREFIX): tensor.long() for key, tensor in matching.tensors.items()}
    if set(perms) != set(spec.groups):
        raise LowlossError(f"{path}: matching covers groups {sorted(perms)}, the network has {spec.groups}")
    for group, perm in perms.items():
        n = spec.size(theta_b, group)
        if not torch.equal(perm.sort().values, torch.arange(n)):
            raise LowlossError(f"{path}: {PREFIX}{group} is not a permutation of {n} units")
    return perms


def matching_for(theta_a: Params, theta_b: Params, ctx: Context) -> dict[str, Tensor]:
    """The context's matching file when given (`--matching`), else a fresh OT matching."""
    if ctx.matching is not None:
        return load_matching(ctx.matching, ctx.endpoints, theta_b, ctx.spec)
    return find_matching(theta_a, theta_b, ctx.spec, ctx.options.get("ot_solver") or "emd")
