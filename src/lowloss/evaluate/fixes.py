"""Point fixes: what is done to every point of a path before it is evaluated (BatchNorm statistics measured
on it, REPAIR), each with one signature so the evaluator applies them in turn."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import torch

from lowloss.evaluate.repair import Repair
from lowloss.nets.batchnorm import BatchNormRefresh
from lowloss.nets.network import Network
from lowloss.nets.params import Params
from lowloss.paths.legs import Leg


class PointFix(Protocol):
    """Changes stacked points (T, …) before evaluation; point i lies on legs[i] at ts[i]."""

    def __call__(self, stacked: Params, legs: Sequence[Leg], ts: Sequence[float]) -> Params: ...


def point_fixes(
    network: Network,
    x_train: torch.Tensor,
    seed: int = 0,
    bn_batches: int | None = None,
    repair_batches: int | None = None,
) -> dict[str, PointFix]:
    """What is done to every point before it is evaluated, in order: BatchNorm statistics measured on it
    (`bn_batches` fixed training batches), then REPAIR (`repair_batches`); None leaves a fix out."""
    fixes: dict[str, PointFix] = {}
    if bn_batches is not None:
        fixes["bn"] = BatchNormRefresh(network.model, x_train, bn_batches, seed)
    if repair_batches is not None:
        fixes["repair"] = Repair(network, x_train, repair_batches, seed, before=fixes.get("bn"))
    return fixes
