"""Paths between two weight vectors: legs (exact at their breakpoints, evaluated in batches of t) and the
swap legs of a permutation stage. What every method builds and the evaluator reads.

Imports `lowloss.nets` and `lowloss.errors` only.
"""

from lowloss._lazy import lazy_exports

SWAP_LEG_PREFIX = "swap-"
"""How a swap leg's name starts (`swap-<group>-<step>`): the path table's readers tell them apart by it."""

__all__ = ["SWAP_LEG_PREFIX", "Leg", "Path", "PermutationStage", "SwapLeg", "chain", "interpolate", "permutation_stage"]
__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "Leg": "legs",
        "Path": "legs",
        "chain": "legs",
        "interpolate": "legs",
        "SwapLeg": "swaps",
        "PermutationStage": "swaps",
        "permutation_stage": "swaps",
    },
)
