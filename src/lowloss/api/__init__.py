"""The Python API: connect two networks by a method and evaluate the path, match their units, infer a model's
spec; from nn.Modules, lowloss model files or the user's checkpoints, on a named dataset or the user's own data.
The command line is a thin layer over the same functions.

Imports `lowloss.results` and everything below it (never `tracking` or `cli`).
"""

from lowloss._lazy import lazy_exports

__all__ = ["Connection", "Endpoints", "Matching", "connect", "dataset_of", "infer_spec", "match"]
__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "connect": "connection",
        "Connection": "connection",
        "match": "matching",
        "Matching": "matching",
        "infer_spec": "models",
        "Endpoints": "models",
        "dataset_of": "data",
    },
)
