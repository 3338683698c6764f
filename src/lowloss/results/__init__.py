"""Results of a run: the paper's Tables 1 and 2 from the path tables, the ensembles' table and Fig. 7, the worst
accuracy against fitting budget (`budget`), every figure, and each table as a page a browser sorts and searches
(`html`).

Imports `lowloss.methods` (the method table) and everything below it.
"""

from lowloss._lazy import lazy_exports

__all__ = ["build_ensemble_report", "build_report"]
__getattr__, __dir__ = lazy_exports(__name__, {"build_report": "tables", "build_ensemble_report": "ensembles"})
