"""Batched evaluation of many path points: loss and accuracy along a path, on train and test.

Points are evaluated together: the stacked parameters of a chunk of t values go through
`torch.func.functional_call` under `vmap`, one data batch at a time, so a leg of 21 points costs
about one pass over the data with 21-times-wider matrix products instead of 21 passes. Chunk sizes
are derived from a memory budget and the model's per-sample activation size.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

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
    return mean_scores((batched(stacked, x[start:start + batch]) for start in range(0, len(x), batch)), y)


def mean_scores(logits_batches: Iterable[torch.Tensor], y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean cross-entropy and accuracy per point from (T, B, C) logits of consecutive batches of y."""
    loss_sum = correct = 0
    start = 0
    for logits in logits_batches:
        yb = y[start:start + logits.shape[1]]
        start += logits.shape[1]
        losses = F.cross_entropy(logits.flatten(0, 1), yb.repeat(len(logits)), reduction="none")
        loss_sum = loss_sum + losses.view(len(logits), -1).sum(1).double()
        correct = correct + (logits.argmax(-1) == yb).sum(1).double()
    return loss_sum / len(y), correct / len(y)


def low_rank(rows: torch.Tensor, tol: float = 1e-12) -> tuple[torch.Tensor, torch.Tensor]:
    """rows (T, P) = coeffs (T, r) @ basis (r, P), r the numerical rank (eigenvalues of the Gram > tol·max).

    A straight leg has rank 2, an arc or a quadratic Bezier curve rank 3, whatever T is. The discarded
    directions are below float32 rounding of the rows.
    """
    m = rows.double()
    eigval, eigvec = torch.linalg.eigh(m @ m.T)
    coeffs = eigvec[:, eigval > tol * eigval[-1].clamp_min(torch.finfo(m.dtype).tiny)]
    return coeffs.float(), (coeffs.T @ m).float()


@dataclass(frozen=True)
class OneHiddenForm:
    """A network that computes logits = W2 relu(W1 flatten(x) + b1) + b2, its tensors named by the spec.

    Two fast paths use it. (1) The first layer is linear in (W1, b1): if a chunk of points has
    first-layer parameters of rank r (2 on a straight leg, 3 on an arc), r products with the data give
    every point's pre-activations, instead of T — the first layer is most of the work. (2) Along a
    permutation-stage swap leg only two hidden units change, each a straight mix of two of the base's
    units u, v, so the logits are the base's plus four rank-one terms: O(B·C) per leg, not a forward pass.
    """

    w1: str
    b1: str | None
    w2: str
    b2: str | None

    @classmethod
    def of(cls, model: nn.Module, params: Params, x: torch.Tensor) -> OneHiddenForm | None:
        """The form of `model`, or None when it is not one (checked on inputs x with `params`)."""
        spec = model.spec()
        if len(spec.groups) != 1:
            return None
        group = spec.groups[0]
        layers = [{key.rsplit(".", 1)[0] for key in keys} for keys in (spec.incoming(group), spec.outgoing(group))]
        if any(len(names) != 1 or not isinstance(model.get_submodule(next(iter(names))), nn.Linear)
               for names in layers):
            return None
        (first,), (second,) = layers
        form = cls(f"{first}.weight", f"{first}.bias" if f"{first}.bias" in params else None,
                   f"{second}.weight", f"{second}.bias" if f"{second}.bias" in params else None)
        if set(spec.outgoing(group)) != {form.w2}:
            return None
        with torch.no_grad():
            stacked = {key: value[None] for key, value in params.items()}
            expected = functional_call(model, params, (x,))
            got = form.logits(stacked, form.pre_activations(*low_rank(form.first_layer(stacked)), x))[0]
        return form if torch.allclose(got, expected, rtol=1e-4, atol=1e-4) else None

    def first_layer(self, stacked: Params) -> torch.Tensor:
        """(T, P1): each point's first-layer parameters as one row."""
        parts = [stacked[self.w1].flatten(1)] + ([stacked[self.b1]] if self.b1 else [])
        return torch.cat(parts, 1)

    def basis_pre_activations(self, basis: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """(r, B, n) hidden pre-activations of the r basis first layers (see `low_rank`)."""
        x1 = x.flatten(1)
        d = x1.shape[1]
        n = basis.shape[1] // (d + 1 if self.b1 else d)
        per_basis = torch.einsum("bd,rnd->rbn", x1, basis[:, :n * d].reshape(len(basis), n, d))
        return per_basis + basis[:, None, n * d:] if self.b1 else per_basis

    def pre_activations(self, coeffs: torch.Tensor, basis: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """(T, B, n) hidden pre-activations of every point: its coefficients times the basis'."""
        return torch.einsum("tr,rbn->tbn", coeffs, self.basis_pre_activations(basis, x))

    def logits_point_by_point(self, stacked: Params, coeffs: torch.Tensor, basis: torch.Tensor,
                              x: torch.Tensor) -> torch.Tensor:
        """(T, B, C) logits, each point's (B, n) hidden layer made and consumed in turn.

        A (T, B, n) tensor of every point's hidden layer would go through main memory three times
        (written, rectified, read); one point's at a time stays in cache, which on a CPU is most of
        the fast path's time.
        """
        per_basis = self.basis_pre_activations(basis, x)
        out = []
        for t, point_coeffs in enumerate(coeffs.tolist()):
            hidden = torch.mul(per_basis[0], point_coeffs[0])
            for part, coeff in zip(per_basis[1:], point_coeffs[1:]):
                hidden.add_(part, alpha=coeff)
            logits = torch.relu_(hidden) @ stacked[self.w2][t].T
            out.append(logits + stacked[self.b2][t] if self.b2 else logits)
        return torch.stack(out)

    def logits(self, stacked: Params, hidden: torch.Tensor) -> torch.Tensor:
        """(T, B, C) logits from pre-activations (T, B, n), overwritten by their ReLU, and each point's output layer."""
        out = torch.relu_(hidden) @ stacked[self.w2].transpose(1, 2)
        return out + stacked[self.b2][:, None, :] if self.b2 else out

    @torch.no_grad()
    def evaluate(self, stacked: Params, x: torch.Tensor, y: torch.Tensor, batch: int,
                 factors: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Like `evaluate_stacked`, with the first layer computed once per basis point.

        `factors` = `low_rank(self.first_layer(stacked))`, when the caller evaluates several splits.
        """
        coeffs, basis = factors or low_rank(self.first_layer(stacked))
        return mean_scores((self.logits_point_by_point(stacked, coeffs, basis, x[s:s + batch])
                            for s in range(0, len(x), batch)), y)

    def swap_logits(self, base: Params, hidden: torch.Tensor, logits: torch.Tensor, units: torch.Tensor,
                    t: torch.Tensor) -> torch.Tensor:
        """(P, B, C) logits at P points: base units units[p] = (u, v) trade places, a fraction t[p] of the way."""
        u, v = units[:, 0], units[:, 1]
        h_u, h_v = hidden[:, u].T, hidden[:, v].T  # (P, B)
        readout = base[self.w2].T
        c_u, c_v = readout[u], readout[v]  # (P, C)
        s = t[:, None]
        acts = torch.stack([torch.relu((1 - s) * h_u + s * h_v), torch.relu((1 - s) * h_v + s * h_u),
                            -torch.relu(h_u), -torch.relu(h_v)], dim=2)  # (P, B, 4)
        weights = torch.stack([(1 - s) * c_u + s * c_v, (1 - s) * c_v + s * c_u, c_u, c_v], dim=1)  # (P, 4, C)
        return torch.baddbmm(logits.expand(len(units), -1, -1), acts, weights)

    @torch.no_grad()
    def evaluate_swaps(self, base: Params, units: torch.Tensor, t: torch.Tensor, x: torch.Tensor, y: torch.Tensor,
                       batch: int, per_chunk: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Loss and accuracy at P swap-leg points from one forward pass of the base per data batch."""
        stacked = {key: value[None] for key, value in base.items()}
        coeffs, basis = low_rank(self.first_layer(stacked))

        def batches():
            for start in range(0, len(x), batch):
                hidden = self.pre_activations(coeffs, basis, x[start:start + batch])
                logits = self.logits(stacked, hidden.clone())[0]
                yield torch.cat([self.swap_logits(base, hidden[0], logits, units[c:c + per_chunk], t[c:c + per_chunk])
                                 for c in range(0, len(units), per_chunk)])

        return mean_scores(batches(), y)


def on_device(params: Params, device: torch.device) -> Params:
    return {key: value.to(device, torch.float32) for key, value in params.items()}


def leg_ts(leg: Leg, points: int) -> list[float]:
    """Evaluation grid of a leg: its own override, else `points` evenly spaced t including both ends."""
    if leg.eval_ts is not None:
        return list(leg.eval_ts)
    return [i / (points - 1) for i in range(points)] if points > 1 else [0.5]


def evaluate_path(model: nn.Module, path: Path, data: Dataset, points: int = 21,
                  splits: Sequence[str] = ("train", "test"), progress: bool = True,
                  budget: int = MEMORY_BUDGET, fast: bool = True) -> pd.DataFrame:
    """Tidy table with one row per (leg, t, split): loss and accuracy (a fraction) along the path.

    Rows run along the path (by leg, then t; splits in the order given). `position` is leg index + t,
    so leg k spans [k, k + 1] (as in the paper's Fig. 5). One-hidden-layer networks take the fast
    paths of `OneHiddenForm` (`fast=False` turns them off); every other network the vmapped
    functional call.
    """
    device = data.x_train.device
    model = model.to(device).eval()
    form = OneHiddenForm.of(model, on_device(path.theta_a, device), data.x_train[:256]) if fast else None
    grids = [leg_ts(leg, points) for leg in path]
    points_per_chunk, batch = chunk_sizes(model, data.input_shape, max(len(g) for g in grids), budget)
    rows = []
    bar = tqdm(total=sum(len(g) for g in grids), desc=f"evaluating {path.method or 'path'}", unit="pt",
               disable=not progress)
    for indices in swap_runs(path):
        legs = [path.legs[i] for i in indices]
        if form is not None and "swap_base" in legs[0].meta:  # a run of swap legs sharing one base
            point_leg = [(index, leg) for index, leg in zip(indices, legs) for _ in grids[index]]
            ts = [t for index in indices for t in grids[index]]
            units = torch.tensor([leg.meta["swap_units"] for _, leg in point_leg], device=device)
            t_points = torch.tensor(ts, dtype=torch.float32, device=device)
            n_classes = legs[0].meta["swap_base"][form.w2].shape[0]
            per_chunk = max(1, budget // (4 * batch * (3 * n_classes + 8)))
            base = on_device(legs[0].meta["swap_base"], device)
            for split in splits:
                loss, acc = form.evaluate_swaps(base, units, t_points,
                                                *data.split(split), batch, per_chunk)
                rows += table_rows(path.method, [i for i, _ in point_leg], [leg.name for _, leg in point_leg], ts,
                                   split, loss, acc)
            bar.update(len(ts))
            continue
        for index, leg in zip(indices, legs):
            ts = grids[index]
            for begin in range(0, len(ts), points_per_chunk):
                t_chunk = ts[begin:begin + points_per_chunk]
                stacked = on_device(leg.at(t_chunk), device)
                factors = low_rank(form.first_layer(stacked)) if form is not None else None
                for split in splits:
                    x, y = data.split(split)
                    if form is not None:
                        loss, acc = form.evaluate(stacked, x, y, batch, factors)
                    else:
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
