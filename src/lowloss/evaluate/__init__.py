"""Evaluation of many path points at once: loss and accuracy along a path on train and test, by the fastest
strategy that applies (one hidden layer, chains of layers, anything else under vmap), with point fixes
(BatchNorm statistics, REPAIR) applied to every point.

Imports `lowloss.training`, `lowloss.storage`, `lowloss.paths`, `lowloss.nets` and `lowloss.errors`; never a
method.
"""

from lowloss._lazy import lazy_exports

__all__ = [
    "Evaluator",
    "PointFix",
    "endpoint_scores",
    "evaluate_path",
    "evaluate_stacked",
    "leg_ts",
    "point_fixes",
    "worst_points",
]
__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "evaluate_path": "engine",
        "leg_ts": "engine",
        "worst_points": "engine",
        "endpoint_scores": "engine",
        "Evaluator": "engine",
        "PointFix": "fixes",
        "point_fixes": "fixes",
        "evaluate_stacked": "scores",
    },
)
