"""The connection methods: their one table (`registry`), what a method may use (`context`), and the builders
(straight and arcs, OT matching and the permutation stage, weight matching, weight adjustment, the
layer-wise route, Garipov's curves, learned flows).

Imports `lowloss.evaluate` and everything below it.
"""

from lowloss._lazy import lazy_exports

__all__ = ["Context", "METHODS", "Method", "Options", "get_method"]
__getattr__, __dir__ = lazy_exports(
    __name__,
    {"METHODS": "registry", "Method": "registry", "get_method": "registry", "Context": "context", "Options": "context"},
)
