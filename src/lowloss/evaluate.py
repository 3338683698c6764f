"""Batched evaluation of many path points: loss and accuracy along a path, on train and test.

Points are evaluated together: the stacked parameters of a chunk of t values go through
`torch.func.functional_call` under `vmap`, one data batch at a time, so a leg of 21 points costs
about one pass over the data with 21-times-wider matrix products instead of 21 passes. Chunk sizes
are derived from a memory budget and the model's per-sample activation size.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, vmap
from tqdm.auto import tqdm

from lowloss.connect.path import Leg, Path
from lowloss.data import Dataset
from lowloss.spec import Params

MEMORY_BUDGET = 1 << 29  # bytes of activations + stacked parameters per chunk (512 MiB)
COLUMNS = ["method", "leg", "leg_name", "t", "position", "split", "loss", "acc"]


def activation_elements(model: nn.Module, input_shape: Sequence[int]) -> int:
    """Numbers produced by all leaf modules for one sample (a proxy for activation memory)."""
    total = 0

    def count(module, inputs, output):
        nonlocal total
        total += output.numel()

    leaves = [m for m in model.modules() if not list(m.children())]
    handles = [m.register_forward_hook(count) for m in leaves]
    try:
        with torch.no_grad():
            device = next(model.parameters()).device
            model(torch.zeros(1, *input_shape, device=device))
    finally:
        for handle in handles:
            handle.remove()
    return max(total, 1)


def chunk_sizes(model: nn.Module, input_shape: Sequence[int], n_points: int,
                budget: int = MEMORY_BUDGET) -> tuple[int, int]:
    """(points per chunk, samples per batch) that keep one chunk within `budget` bytes."""
    n_params = sum(p.numel() for p in model.parameters())
    points = max(1, min(n_points, budget // (4 * n_params * 2)))
    per_sample = 4 * 3 * activation_elements(model, input_shape)
    batch = max(1, budget // (per_sample * points))
    return points, batch


@torch.no_grad()
def evaluate_stacked(model: nn.Module, stacked: Params, x: torch.Tensor, y: torch.Tensor,
                     batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean cross-entropy and accuracy for each of the T stacked parameter sets: two (T,) tensors."""
    def logits_of(params: Params, inputs: torch.Tensor) -> torch.Tensor:
        return functional_call(model, params, (inputs,))

    batched = vmap(logits_of, in_dims=(0, None))
    n_points = next(iter(stacked.values())).shape[0]
    loss_sum = torch.zeros(n_points, dtype=torch.float64, device=x.device)
    correct = torch.zeros(n_points, dtype=torch.float64, device=x.device)
    for start in range(0, len(x), batch):
        xb, yb = x[start:start + batch], y[start:start + batch]
        logits = batched(stacked, xb)  # (T, B, C)
        losses = F.cross_entropy(logits.flatten(0, 1), yb.repeat(n_points), reduction="none")
        loss_sum += losses.view(n_points, -1).sum(1).double()
        correct += (logits.argmax(-1) == yb).sum(1).double()
    return loss_sum / len(x), correct / len(x)


def leg_ts(leg: Leg, points: int) -> list[float]:
    """Evaluation grid of a leg: its own override, else `points` evenly spaced t including both ends."""
    if leg.eval_ts is not None:
        return list(leg.eval_ts)
    return [i / (points - 1) for i in range(points)] if points > 1 else [0.5]


def evaluate_path(model: nn.Module, path: Path, data: Dataset, points: int = 21,
                  splits: Sequence[str] = ("train", "test"), progress: bool = True,
                  budget: int = MEMORY_BUDGET) -> pd.DataFrame:
    """Tidy table with one row per (leg, t, split): loss and accuracy (a fraction) along the path.

    `position` is leg index + t, so leg k spans [k, k + 1] (as in the paper's Fig. 5).
    """
    device = data.x_train.device
    model = model.to(device).eval()
    grids = [leg_ts(leg, points) for leg in path]
    max_points = max(len(g) for g in grids)
    points_per_chunk, batch = chunk_sizes(model, data.input_shape, max_points, budget)
    rows = []
    bar = tqdm(total=sum(len(g) for g in grids), desc=f"evaluating {path.method or 'path'}", unit="pt",
               disable=not progress)
    for index, (leg, ts) in enumerate(zip(path, grids)):
        for begin in range(0, len(ts), points_per_chunk):
            t_chunk = ts[begin:begin + points_per_chunk]
            stacked = {k: v.to(device, torch.float32) for k, v in leg.at(t_chunk).items()}
            for split in splits:
                x, y = data.split(split)
                loss, acc = evaluate_stacked(model, stacked, x, y, batch)
                rows += [dict(method=path.method, leg=index, leg_name=leg.name, t=t, position=index + t,
                              split=split, loss=loss[i].item(), acc=acc[i].item())
                         for i, t in enumerate(t_chunk)]
            bar.update(len(t_chunk))
    bar.close()
    return pd.DataFrame(rows, columns=COLUMNS)


def worst_points(table: pd.DataFrame) -> dict[str, dict]:
    """Per split, the row of lowest accuracy (the paper's metric is this accuracy)."""
    worst = {}
    for split, rows in table.groupby("split"):
        row = rows.loc[rows["acc"].idxmin()]
        worst[split] = {"acc": float(row["acc"]), "loss": float(row["loss"]),
                        "position": float(row["position"]), "leg_name": str(row["leg_name"])}
    return worst


def flops_per_point(model: nn.Module, input_shape: Sequence[int]) -> float:
    """Approximate forward FLOPs of one sample (2 x multiply-adds of linear and conv layers)."""
    total = 0

    def count(module, inputs, output):
        nonlocal total
        if isinstance(module, nn.Linear):
            total += 2 * module.in_features * module.out_features
        elif isinstance(module, nn.Conv2d):
            total += 2 * math.prod(module.weight.shape[1:]) * output.numel()

    handles = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    try:
        with torch.no_grad():
            model(torch.zeros(1, *input_shape, device=next(model.parameters()).device))
    finally:
        for handle in handles:
            handle.remove()
    return float(total)
