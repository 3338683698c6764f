"""The permutation stage of §3.4 and the `ot` method: a straight leg to the matched Θ^B, then one leg per swap.

After the OT leg the network is Θ^B with its units in A's order; the permutation stage restores B's
order by swap legs (`lowloss.paths.swaps`), one group after the other, the last group first.
"""

from __future__ import annotations

from torch import Tensor

from lowloss.methods.context import Context
from lowloss.methods.matching import matching_for, sequential_matching
from lowloss.nets.params import Params
from lowloss.nets.spec import Spec, permute
from lowloss.paths.legs import Leg, Path
from lowloss.paths.swaps import permutation_stage


def permutation_legs(theta_b: Params, spec: Spec, perms: dict[str, Tensor]) -> list[Leg]:
    """Swap legs from `permute(theta_b, spec, perms)` to Θ^B, one group after the other, the last group first.

    Groups on different axes commute, so the stage of a group works on Θ^B with only the groups before it still
    permuted; the last stage ends at Θ^B itself. Last group first: each stage then starts on a network whose layers
    up to its group are the matched Θ^B's, whose outputs the evaluation of the legs before has kept
    (`evaluate.swaps`).
    """
    groups = list(perms)
    legs: list[Leg] = []
    for k in reversed(range(len(groups))):
        base = permute(theta_b, spec, {g: perms[g] for g in groups[:k]})
        legs += permutation_stage(base, spec, groups[k], perms[groups[k]]).legs()
    return legs


def matched_legs(theta_a: Params, theta_b: Params, spec: Spec, perms: dict[str, Tensor], name: str = "ot") -> list[Leg]:
    """A straight leg Θ^A -> Θ^B with its units in A's order, then the permutation stages back to Θ^B."""
    return [Leg(theta_a, permute(theta_b, spec, perms), name), *permutation_legs(theta_b, spec, perms)]


def ot_matching(method: str, theta_a: Params, theta_b: Params, ctx: Context) -> tuple[dict[str, Tensor], None]:
    """The matching `ot` uses (it depends on the endpoints alone)."""
    return sequential_matching(theta_a, theta_b, ctx.spec, ctx.options.ot_solver), None


def ot_path(method: str, theta_a: Params, theta_b: Params, ctx: Context) -> Path:
    """§3.4 for a whole network: every group OT-matched in turn, a straight leg, then the swaps."""
    perms = matching_for(method, ctx, theta_b, lambda: ot_matching(method, theta_a, theta_b, ctx)[0])
    return Path(matched_legs(theta_a, theta_b, ctx.spec, perms))
