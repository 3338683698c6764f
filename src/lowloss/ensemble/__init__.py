"""WA-ensembles (§6): independently trained networks that share the first one's backbone, Ind beside them.

Imports `lowloss.methods` (the least-squares re-fit) and everything below it.
"""

from lowloss._lazy import lazy_exports

__all__ = ["Ensemble", "independent", "load_ensemble", "save_ensemble", "weight_adjusted"]
__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "Ensemble": "backbone",
        "independent": "backbone",
        "weight_adjusted": "backbone",
        "save_ensemble": "backbone",
        "load_ensemble": "backbone",
    },
)
