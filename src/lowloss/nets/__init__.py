"""Networks and their weights: architecture specs (which hidden-unit group every parameter axis belongs
to), the network seen as layers with a cuttable forward pass and stages, the built-in architectures and
their one table, parameter sets, and BatchNorm statistics measured at a point.

Imports only `lowloss.errors` (the bottom of the house: every other package may import this one).
"""

from lowloss._lazy import lazy_exports

__all__ = [
    "BatchNormRefresh",
    "Layer",
    "Network",
    "Params",
    "Spec",
    "Stage",
    "build_model",
    "conv",
    "dense",
    "norm",
    "permute",
    "stack_params",
    "unstack_params",
]
__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "Spec": "spec",
        "dense": "spec",
        "conv": "spec",
        "norm": "spec",
        "permute": "spec",
        "Params": "params",
        "stack_params": "params",
        "unstack_params": "params",
        "Network": "network",
        "Layer": "network",
        "Stage": "network",
        "build_model": "models",
        "BatchNormRefresh": "batchnorm",
    },
)
