"""BatchNorm's running statistics recomputed at every path point (Garipov et al.'s `update_bn`).

A point between two networks with BatchNorm carries the endpoints' running means and variances mixed
like any other tensor, but the activations of the mixed network have other statistics: evaluated in
eval mode, its normalisation is wrong and the path shows a barrier that is not the weights' own. Here
every evaluated point gets statistics measured on it, from one fixed set of training batches shared by
all points, by `torch.optim.swa_utils.update_bn` (a cumulative average over the batches, in train mode).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn
from torch.optim.swa_utils import update_bn

from lowloss.errors import LowlossError
from lowloss.nets.params import Params, unstack_params
from lowloss.nets.spec import STATISTICS

BATCH_SIZE = 128


def batchnorm_layers(model: nn.Module) -> list[str]:
    """Names of the model's BatchNorm layers: the layers whose running statistics a point carries."""
    return [name for name, module in model.named_modules() if isinstance(module, nn.modules.batchnorm._BatchNorm)]


def fixed_samples(x_train: torch.Tensor, batches: int, seed: int) -> torch.Tensor:
    """`batches` x 128 training samples drawn with `seed`: the same for every point of a path."""
    order = torch.randperm(len(x_train), generator=torch.Generator().manual_seed(seed))
    return x_train[order[: batches * BATCH_SIZE].to(x_train.device)]


class BatchNormRefresh:
    """Replaces the running statistics of stacked points by those measured on `batches` fixed training batches."""

    def __init__(self, model: nn.Module, x_train: torch.Tensor, batches: int, seed: int = 0):
        norms = batchnorm_layers(model)
        if not norms:
            raise LowlossError(
                f"{type(model).__name__} has no BatchNorm layers: there are no running statistics "
                f"to recompute (leave out --bn-batches)"
            )
        if batches < 1:
            raise LowlossError(f"--bn-batches must be at least 1, got {batches}")
        self.batches = list(fixed_samples(x_train, batches, seed).split(BATCH_SIZE))
        self.model = copy.deepcopy(model)
        self.keys = [f"{name}.{statistic}" for name in norms for statistic in STATISTICS]

    @property
    def samples(self) -> int:
        return sum(len(batch) for batch in self.batches)

    def __call__(self, stacked: Params, legs: Sequence[object], ts: Sequence[float]) -> Params:
        """The same points (T, …) with every BatchNorm layer's statistics measured on the fixed batches (whatever
        their legs and t: the signature every point fix of the evaluator shares)."""
        measured = {key: stacked[key].clone() for key in self.keys}
        for index in range(len(next(iter(stacked.values())))):
            self.model.load_state_dict(unstack_params(stacked, index))
            update_bn(self.batches, self.model)
            state = self.model.state_dict()
            for key in self.keys:
                measured[key][index] = state[key]
        return {**stacked, **measured}
