"""Batched evaluation of many path points: loss and accuracy along a path, on train and test.

Points are evaluated together: the stacked parameters of a chunk of t values go through
`torch.func.functional_call` under `vmap`, one data batch at a time, so a leg of 21 points costs
about one pass over the data with 21-times-wider matrix products instead of 21 passes. Chunk sizes
are derived from a memory budget and the model's per-sample activation size.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, vmap
from tqdm.auto import tqdm

from lowloss.connect.adjust import layer_io
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
                  budget: int = MEMORY_BUDGET, incremental: bool = True) -> pd.DataFrame:
    """Tidy table with one row per (leg, t, split): loss and accuracy (a fraction) along the path.

    Rows run along the path (by leg, then t; splits in the order given). `position` is leg index + t,
    so leg k spans [k, k + 1] (as in the paper's Fig. 5). Runs of
    permutation-stage swap legs are evaluated incrementally when the network allows it (see
    `SwapReadout`), else like any other leg.
    """
    device = data.x_train.device
    model = model.to(device).eval()
    grids = [leg_ts(leg, points) for leg in path]
    points_per_chunk, batch = chunk_sizes(model, data.input_shape, max(len(g) for g in grids), budget)
    rows = []
    bar = tqdm(total=sum(len(g) for g in grids), desc=f"evaluating {path.method or 'path'}", unit="pt",
               disable=not progress)
    for indices in swap_runs(path):
        legs = [path.legs[i] for i in indices]
        readout = SwapReadout.of(model, legs[0], data) if incremental and "swap_base" in legs[0].meta else None
        if readout is not None:
            rows += readout.evaluate(path.method, indices, legs, [grids[i] for i in indices], data, splits,
                                     batch, budget)
            bar.update(sum(len(grids[i]) for i in indices))
            continue
        for index, leg in zip(indices, legs):
            ts = grids[index]
            for begin in range(0, len(ts), points_per_chunk):
                t_chunk = ts[begin:begin + points_per_chunk]
                stacked = {k: v.to(device, torch.float32) for k, v in leg.at(t_chunk).items()}
                for split in splits:
                    x, y = data.split(split)
                    loss, acc = evaluate_stacked(model, stacked, x, y, batch)
                    rows += table_rows(path.method, [index] * len(t_chunk), [leg.name] * len(t_chunk), t_chunk,
                                       split, loss, acc)
                bar.update(len(t_chunk))
    bar.close()
    return pd.DataFrame(rows, columns=COLUMNS).sort_values(["leg", "t"], kind="stable", ignore_index=True)


def table_rows(method: str, indices: Sequence[int], names: Sequence[str], ts: Sequence[float], split: str,
               loss: torch.Tensor, acc: torch.Tensor) -> list[dict]:
    """Rows of the path table for points (leg index, leg name, t) on one split."""
    return [dict(method=method, leg=index, leg_name=name, t=t, position=index + t, split=split,
                 loss=loss[i].item(), acc=acc[i].item())
            for i, (index, name, t) in enumerate(zip(indices, names, ts))]


def swap_runs(path: Path) -> list[list[int]]:
    """Leg indices grouped into runs of consecutive swap legs sharing one base; other legs alone."""
    runs: list[list[int]] = []
    previous = None
    for index, leg in enumerate(path):
        base = leg.meta.get("swap_base")
        if base is not None and base is previous:
            runs[-1].append(index)
        else:
            runs.append([index])
        previous = base
    return runs


@dataclass(frozen=True)
class SwapReadout:
    """A one-hidden-layer network as logits = relu(h) C + c, h the output of `hidden_module`.

    Along a swap leg only two hidden units change, each a straight mix of two of the base's units u, v:
    their pre-activations are the same mix of the base's columns h_u, h_v (the first layer is linear in
    its weights), so the logits are the base's plus four rank-one terms. One forward pass of the base
    per data batch serves every swap leg of the stage: O(B·C) per leg instead of a forward pass.
    """

    model: nn.Module
    hidden_module: str
    readout: torch.Tensor  # (n, C): unit i's outgoing weights
    base: Params

    @classmethod
    def of(cls, model: nn.Module, leg: Leg, data: Dataset) -> SwapReadout | None:
        """The readout of `leg`'s stage, or None when the network is not of that form (checked on data)."""
        spec, group, base = model.spec(), leg.meta["swap_group"], leg.meta["swap_base"]
        modules = {key.rsplit(".", 1)[0] for key in spec.incoming(group)}
        outgoing = [(key, axis) for key, axis in spec.members(group) if axis != 0]
        if spec.groups != [group] or len(modules) != 1 or len(outgoing) != 1 or outgoing[0][1] != 1:
            return None
        weight = base[outgoing[0][0]]
        if weight.dim() != 2 or weight.shape[1] != spec.size(base, group):
            return None
        device = data.x_train.device
        readout = cls(model, modules.pop(), weight.T.to(device, torch.float32),
                      {k: v.to(device, torch.float32) for k, v in base.items()})
        hidden, logits = readout.forward(data.x_train[:256])
        rest = logits - torch.relu(hidden) @ readout.readout
        return readout if torch.allclose(rest, rest[:1].expand_as(rest), rtol=1e-4, atol=1e-4) else None

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Hidden pre-activations (B, n) and logits (B, C) of the base network."""
        _, hidden, logits = layer_io(self.model, self.base, self.hidden_module, x)
        return hidden, logits

    def logits_at(self, hidden: torch.Tensor, logits: torch.Tensor, units: torch.Tensor,
                  t: torch.Tensor) -> torch.Tensor:
        """(P, B, C) logits at P points: units[p] = (u, v) trade places, a fraction t[p] of the way."""
        u, v = units[:, 0], units[:, 1]
        h_u, h_v = hidden[:, u].T, hidden[:, v].T  # (P, B)
        c_u, c_v = self.readout[u], self.readout[v]  # (P, C)
        s = t[:, None]
        acts = torch.stack([torch.relu((1 - s) * h_u + s * h_v), torch.relu((1 - s) * h_v + s * h_u),
                            -torch.relu(h_u), -torch.relu(h_v)], dim=2)  # (P, B, 4)
        weights = torch.stack([(1 - s) * c_u + s * c_v, (1 - s) * c_v + s * c_u, c_u, c_v], dim=1)  # (P, 4, C)
        return torch.baddbmm(logits.expand(len(units), -1, -1), acts, weights)

    @torch.no_grad()
    def evaluate(self, method: str, indices: Sequence[int], legs: Sequence[Leg], grids: Sequence[Sequence[float]],
                 data: Dataset, splits: Sequence[str], batch: int, budget: int) -> list[dict]:
        """Rows for every (leg, t) of a run of swap legs, from one base forward pass per data batch."""
        device = data.x_train.device
        point_leg = [k for k, grid in enumerate(grids) for _ in grid]
        ts = [t for grid in grids for t in grid]
        units = torch.tensor([legs[k].meta["swap_units"] for k in point_leg], device=device)
        t_points = torch.tensor(ts, dtype=torch.float32, device=device)
        n_classes = self.readout.shape[1]
        per_chunk = max(1, budget // (4 * batch * (3 * n_classes + 8)))
        rows = []
        for split in splits:
            x, y = data.split(split)
            loss_sum = torch.zeros(len(ts), dtype=torch.float64, device=device)
            correct = torch.zeros(len(ts), dtype=torch.float64, device=device)
            for start in range(0, len(x), batch):
                xb, yb = x[start:start + batch], y[start:start + batch]
                hidden, logits = self.forward(xb)
                for begin in range(0, len(ts), per_chunk):
                    chunk = slice(begin, begin + per_chunk)
                    out = self.logits_at(hidden, logits, units[chunk], t_points[chunk])
                    losses = F.cross_entropy(out.flatten(0, 1), yb.repeat(len(out)), reduction="none")
                    loss_sum[chunk] += losses.view(len(out), -1).sum(1).double()
                    correct[chunk] += (out.argmax(-1) == yb).sum(1).double()
            rows += table_rows(method, [indices[k] for k in point_leg], [legs[k].name for k in point_leg], ts,
                               split, loss_sum / len(x), correct / len(x))
        return rows


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
