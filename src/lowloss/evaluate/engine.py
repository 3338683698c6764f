"""Batched evaluation of many path points: loss and accuracy along a path, on train and test.

Points are evaluated together, and every leg on the full splits (the worst point of a path is exact,
never sampled). Three strategies share the work, picked per leg:

* one-hidden-layer networks: `OneHiddenForm`'s low-rank first layer and rank-one swap legs;
* chains of dense and conv layers: `LayeredEngine`, which runs the layers a chunk of points shares
  once and only the changing ones per point, and `swap_scores`, which evaluates swap legs from the
  base's activations (a rank-four update of the reading layer, the rest only where it changes);
* anything else (a residual network, `Network.is_chain` false): the stacked parameters of a chunk go
  through `torch.func.functional_call` under `vmap`, one data batch at a time; the midpoints of many
  swap legs share a chunk.

`points="auto"` evaluates a coarse grid, then searches the lowest bracket of each split (`adaptive`).

Chunk sizes come from a memory budget and the model's per-sample activation size. Point fixes (BatchNorm
statistics measured on each point, REPAIR) change each point's tensors before it is evaluated; with any of
them, what reuses one point's activations for others (a straight leg's two ends, a swap leg's base, the
one-hidden form) is off, and a chain's points are planned from their stacked tensors.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
import torch
from torch import Tensor
from tqdm.auto import tqdm

from lowloss.evaluate.adaptive import AUTO, COARSE_POINTS, golden_search, search_steps
from lowloss.evaluate.fixes import PointFix
from lowloss.evaluate.layered import Batches, LayeredEngine
from lowloss.evaluate.onehidden import OneHiddenForm
from lowloss.evaluate.scores import (
    CPU_BATCH_BYTES,
    MEMORY_BUDGET,
    Scores,
    batch_size,
    chunk_sizes,
    evaluate_stacked,
    low_rank,
)
from lowloss.evaluate.swaps import BLOCK_BYTES as SWAP_BLOCK_BYTES
from lowloss.evaluate.swaps import GroupCut, StartOutputs, swap_scores
from lowloss.nets.network import Network
from lowloss.nets.params import Params, on_device, stack_params, unstack_params
from lowloss.paths.legs import Leg, Path
from lowloss.paths.swaps import PermutationStage, SwapLeg
from lowloss.storage.path_table import POINT_COLUMNS, worst_row
from lowloss.training.data import Dataset

SWAP_CHECK_SAMPLES = 64


def leg_ts(leg: Leg, points: int) -> list[float]:
    """Evaluation grid of a leg: its own override, else `points` evenly spaced t including both ends."""
    if leg.eval_ts is not None:
        return list(leg.eval_ts)
    return [i / (points - 1) for i in range(points)] if points > 1 else [0.5]


def path_grids(path: Path, points: int) -> list[list[float]]:
    """Every leg's grid, with Θ^A (t = 0 of the first leg) and Θ^B (t = 1 of the last) always included,
    so that a table holds its endpoints evaluated exactly like the path."""
    grids = [leg_ts(leg, points) for leg in path]
    if 0.0 not in grids[0]:
        grids[0] = [0.0, *grids[0]]
    if 1.0 not in grids[-1]:
        grids[-1] = [*grids[-1], 1.0]
    return grids


class Evaluator:
    """The strategies for one network on one device, and the chunking that keeps them in a memory budget.

    `fixes` are applied to every point, in order, before it is evaluated; with `screen_swaps`, the permutation
    stages of chains whose layers after a group's reader are dense are screened (`evaluate.swaps`).
    """

    def __init__(
        self,
        network: Network,
        data: Dataset,
        theta_a,
        budget: int,
        fast: bool,
        points: int,
        fixes: Sequence[PointFix] = (),
        screen_swaps: bool = False,
    ):
        self.network, self.data, self.budget, self.fixes = network, data, budget, fixes
        self.screen_swaps = screen_swaps
        self.device = data.x_train.device
        self.reuse = fast and not fixes  # strategies that derive points' activations from other points'
        self.form = (
            OneHiddenForm.of(network, on_device(theta_a, self.device), data.x_train[:256]) if self.reuse else None
        )
        self.layered = LayeredEngine(network, batched=self.device.type == "cuda") if fast and network.is_chain else None
        self.points_per_chunk, self.batch = chunk_sizes(network.model, data.input_shape, points, budget)
        self.layered_batch = (
            min(self.batch, batch_size(network.model, data.input_shape, self.points_per_chunk, CPU_BATCH_BYTES))
            if self.device.type == "cpu"
            else self.batch
        )
        self.block_bytes = SWAP_BLOCK_BYTES if self.device.type == "cpu" else budget
        self._swap_ok: dict[int, bool] = {}
        self._cut: tuple[PermutationStage, GroupCut] | None = None

    def points(self, leg: Leg, ts: list[float], splits: Sequence[str]) -> dict[str, Scores]:
        """Scores of the leg's points at `ts` on every split; whatever a strategy prepares is shared by the splits."""
        if self.reuse and self.layered is not None and leg.fn is None:  # straight: what stays still is not stacked
            plan = self.layered.plan_straight(on_device(leg.start, self.device), on_device(leg.end, self.device), ts)
            return {split: self.layered.points(plan, *self.data.split(split), self.layered_batch) for split in splits}
        ends = (on_device(leg.start, self.device), on_device(leg.end, self.device)) if self.reuse else None
        return self.stacked_points(self.prepared(leg.at(ts), [leg] * len(ts), ts), splits, self.batch, ends)

    def stacked_points(
        self, stacked: Params, splits: Sequence[str], batch: int, ends: tuple[Params, Params] | None = None
    ) -> dict[str, Scores]:
        """Scores of stacked points on every split, by the fastest strategy that takes any points. `ends`: the
        points' leg's ends, which the layered engine takes as the points' basis where they span them."""
        data = self.data
        if self.form is not None:
            factors = low_rank(self.form.first_layer(stacked))
            return {split: self.form.evaluate(stacked, *data.split(split), batch, factors) for split in splits}
        if self.layered is not None:
            plan = self.layered.plan_stacked(stacked, ends)
            batch = min(batch, self.layered_batch)
            return {split: self.layered.points(plan, *data.split(split), batch) for split in splits}
        return {split: evaluate_stacked(self.network.model, stacked, *data.split(split), batch) for split in splits}

    def prepared(self, stacked: Params, legs: Sequence[Leg], ts: Sequence[float]) -> Params:
        """Stacked points on the device, each fixed by every point fix in turn."""
        stacked = on_device(stacked, self.device)
        for fix in self.fixes:
            stacked = fix(stacked, legs, ts)
        return stacked

    def swaps(self, legs: Sequence[SwapLeg], ts: Sequence[float], split: str) -> Scores | None:
        """Scores of swap legs of one permutation stage (one point per entry of `ts`), or None when no
        incremental strategy applies."""
        swaps = legs[0].swaps
        base = on_device(swaps.base, self.device)
        units = torch.tensor([leg.units for leg in legs], device=self.device)
        t = torch.tensor(ts, dtype=torch.float32, device=self.device)
        x, y = self.data.split(split)
        if self.form is not None:
            n_classes = base[self.form.w2].shape[0]
            per_chunk = max(1, self.budget // (4 * self.batch * (3 * n_classes + 8)))
            return self.form.evaluate_swaps(base, units, t, x, y, self.batch, per_chunk)
        if self.layered is None or not self._layered_swaps_exact(legs[0], base):
            return None
        cut = self.group_cut(swaps, base)
        step = self.layered_batch
        batch = max(1, self.batch // step) * step
        start = self.start_outputs(swaps, cut, x, step, batch)
        return swap_scores(cut, units, t, x, y, batch, self.block_bytes, self.screen_swaps, start)

    def start_outputs(self, swaps: PermutationStage, cut: GroupCut, x: Tensor, step: int, batch: int) -> StartOutputs:
        """The stage's start on x in batches of `batch`, from the layered engine's outputs in batches of `step` (a
        divisor): kept where the legs before computed them, and kept for the stages after."""
        start = on_device(swaps.params(0), self.device)
        layer = self.network.computing(swaps.group)
        pre, out = (self.layered.outputs.output(which, start, x, step) for which in (layer, cut.reader))
        order = swaps.order(0).to(self.device)
        positions = torch.empty_like(order)
        positions[order] = torch.arange(len(order), device=self.device)

        def rebatched(batches: Batches) -> Batches:
            return lambda first: torch.cat([batches(s) for s in range(first, min(first + batch, len(x)), step)])

        return StartOutputs(rebatched(pre), rebatched(out), positions)

    def group_cut(self, swaps: PermutationStage, base: Params) -> GroupCut:
        """The network cut around the stage's group with the stage's base (the last stage's is kept: its splits
        and its exactness check share it)."""
        if self._cut is None or self._cut[0] is not swaps:
            self._cut = (swaps, GroupCut.of(self.network, swaps.group, base))
        return self._cut[1]

    def swap_points(self, legs: Sequence[SwapLeg], ts: Sequence[float], splits: Sequence[str]) -> dict[str, Scores]:
        """Scores of swap legs on every split: incrementally where a fast strategy applies, else by full passes."""
        if self.reuse and (self.form is not None or self.layered is not None):
            scores = {split: self.swaps(legs, ts, split) for split in splits}
            if all(score is not None for score in scores.values()):
                return scores
        return self.stacked_swaps(legs, ts, splits)

    def stacked_swaps(self, legs: Sequence[SwapLeg], ts: Sequence[float], splits: Sequence[str]) -> dict[str, Scores]:
        """Scores of swap legs by full forward passes, many legs' points stacked into each chunk (a swap leg has
        one point: leg by leg, every vmapped call would hold a single point)."""
        per_chunk, batch = chunk_sizes(self.network.model, self.data.input_shape, len(ts), self.budget)
        parts: dict[str, list[Scores]] = {split: [] for split in splits}
        for begin in range(0, len(ts), per_chunk):
            chunk_legs, chunk_ts = legs[begin : begin + per_chunk], ts[begin : begin + per_chunk]
            points = [unstack_params(leg.at([t]), 0) for leg, t in zip(chunk_legs, chunk_ts)]
            stacked = self.prepared(stack_params(points), chunk_legs, chunk_ts)
            for split, scores in self.stacked_points(stacked, splits, batch).items():
                parts[split].append(scores)
        return {split: tuple(torch.cat(column) for column in zip(*scores)) for split, scores in parts.items()}

    def _layered_swaps_exact(self, leg: SwapLeg, base) -> bool:
        """Whether the incremental swap evaluation reproduces a full forward pass on a few samples (it
        assumes the operations between a group's layers act channel by channel, as ReLU and pooling do)."""
        key = id(leg.swaps)
        if key not in self._swap_ok:
            x, y = (part[:SWAP_CHECK_SAMPLES] for part in self.data.split("train"))
            units = torch.tensor([leg.units], device=self.device)
            t = torch.tensor([0.5], device=self.device)
            fast = swap_scores(self.group_cut(leg.swaps, base), units, t, x, y, len(x))
            full = evaluate_stacked(self.network.model, on_device(leg.at([0.5]), self.device), x, y, len(x))
            self._swap_ok[key] = all(torch.allclose(a, b, rtol=1e-4, atol=1e-5) for a, b in zip(fast, full))
        return self._swap_ok[key]


def evaluate_path(
    network: Network,
    path: Path,
    data: Dataset,
    points: int | str = 21,
    splits: Sequence[str] = ("train", "test"),
    progress: bool = True,
    budget: int = MEMORY_BUDGET,
    fast: bool = True,
    fixes: Sequence[PointFix] = (),
    screen_swaps: bool = False,
) -> pd.DataFrame:
    """Tidy table with one row per (leg, t, split): loss and accuracy (a fraction) along the path.

    Rows run along the path (by leg, then t; splits in the order given). `position` is leg index + t,
    so leg k spans [k, k + 1] (as in the paper's Fig. 5); `stage` is the route stage of the leg.
    `points`: evenly spaced t per leg, or `auto` (`lowloss.evaluate.adaptive`: a coarse grid on every split, then
    a search of each split's worst point, each point on its split and the smaller ones; the table holds every
    point evaluated). `fast=False` evaluates every point by the generic vmapped functional call (the reference).
    `fixes` change every point before it is evaluated (BatchNorm statistics measured on it, REPAIR).
    `screen_swaps`: screen the legs of permutation stages where `evaluate.swaps.MarginBound` applies: every leg's
    accuracy exact, the loss (NaN otherwise) of each stage's legs of its lowest accuracy only; the worst points
    are the same.
    """
    network.model.to(data.x_train.device).eval()
    adaptive = points == AUTO
    grids = path_grids(path, COARSE_POINTS if adaptive else points)
    evaluator = Evaluator(network, data, path.theta_a, budget, fast, max(len(g) for g in grids), fixes, screen_swaps)
    searched = len(splits) * (search_steps() + 1) if adaptive else 0
    with progress_bar(path, sum(len(g) for g in grids) + searched, progress) as bar:
        rows = grid_rows(evaluator, path, grids, splits, bar)
        if adaptive:
            rows += searched_rows(evaluator, path, rows, splits, bar)
        return path_table(rows)


def progress_bar(path: Path, points: int, progress: bool) -> tqdm:
    """A bar counting the path's evaluated points (off when `progress` is false)."""
    return tqdm(total=points, desc=f"evaluating {path.method or 'path'}", unit="pt", disable=not progress)


def path_table(rows: list[dict]) -> pd.DataFrame:
    """The evaluated points as a table along the path (by leg, then t)."""
    return pd.DataFrame(rows, columns=list(POINT_COLUMNS)).sort_values(["leg", "t"], kind="stable", ignore_index=True)


def grid_rows(
    evaluator: Evaluator, path: Path, grids: list[list[float]], splits: Sequence[str], bar: tqdm
) -> list[dict]:
    """Rows of every leg's grid on every split; a run of swap legs of one stage is evaluated together."""
    rows = []
    for indices in swap_runs(path):
        legs = [path.legs[i] for i in indices]
        point_legs = [(index, leg) for index, leg in zip(indices, legs) for _ in grids[index]]
        ts = [t for index in indices for t in grids[index]]
        if isinstance(legs[0], SwapLeg):
            scores = evaluator.swap_points([leg for _, leg in point_legs], ts, splits)
            for split, (loss, acc) in scores.items():
                rows += table_rows(path.method, point_legs, ts, split, loss, acc)
            bar.update(len(ts))
            continue
        for index, leg in zip(indices, legs):
            grid = grids[index]
            if joined(evaluator, path, grids, index):
                rows += joint_rows(rows, index, leg)
                bar.update(1)
                grid = [t for t in grid if t != 0.0]
            for begin in range(0, len(grid), evaluator.points_per_chunk):
                t_chunk = grid[begin : begin + evaluator.points_per_chunk]
                rows += leg_rows(evaluator, path.method, index, leg, t_chunk, splits)
                bar.update(len(t_chunk))
    return rows


def joined(evaluator: Evaluator, path: Path, grids: list[list[float]], index: int) -> bool:
    """Whether leg `index` starts at the point the previous leg's grid ended on, already evaluated: a path's joints
    are on two legs' grids (one point in eleven of a two-leg curve's). Not with point fixes, which may treat a
    point differently on each leg."""
    if not index or not evaluator.reuse or 0.0 not in grids[index] or 1.0 not in grids[index - 1]:
        return False
    previous, leg = path.legs[index - 1], path.legs[index]
    return previous.end is leg.start or all(torch.equal(previous.end[key], leg.start[key]) for key in leg.start)


def joint_rows(rows: list[dict], index: int, leg: Leg) -> list[dict]:
    """Leg `index`'s rows at t = 0: the previous leg's at t = 1 (see `joined`)."""
    return [
        {**row, "leg": index, "leg_name": leg.name, "stage": leg.stage, "t": 0.0, "position": float(index)}
        for row in rows
        if row["leg"] == index - 1 and row["t"] == 1.0
    ]


def searched_rows(evaluator: Evaluator, path: Path, rows: list[dict], splits: Sequence[str], bar: tqdm) -> list[dict]:
    """Rows of the points a golden-section search adds, split by split, between the neighbours of the split's
    lowest point so far on a leg of its own grid (a swap leg's one point is where it is). A searched point is
    evaluated on its own split and on every smaller one: a smaller split's evaluation costs little and its own
    search may use the point, while a point of the test split's search evaluated on the training split too
    would cost a pass over six times as many samples for nothing the search needs."""
    keys = {(row["leg"], row["t"], row["split"]): (row["acc"], -row["loss"]) for row in rows}
    added: list[dict] = []
    sizes = {split: len(evaluator.data.split(split)[1]) for split in splits}
    for split in splits:
        evaluated_on = [other for other in splits if sizes[other] <= sizes[split]]
        searchable = [row for row in rows + added if row["split"] == split and path.legs[row["leg"]].eval_ts is None]
        if not searchable:
            continue
        worst = min(searchable, key=lambda row: keys[row["leg"], row["t"], split])
        index = worst["leg"]
        ts = sorted({row["t"] for row in searchable if row["leg"] == index})
        at = ts.index(worst["t"])

        def key(t: float, index: int = index, split: str = split, on: list[str] = evaluated_on) -> tuple[float, float]:
            if (index, t, split) not in keys:
                new = leg_rows(evaluator, path.method, index, path.legs[index], [t], on)
                keys.update({(index, t, row["split"]): (row["acc"], -row["loss"]) for row in new})
                added.extend(new)
                bar.update(1)
            return keys[index, t, split]

        golden_search(key, ts[max(at - 1, 0)], worst["t"], ts[min(at + 1, len(ts) - 1)])
    return added


def leg_rows(
    evaluator: Evaluator, method: str, index: int, leg: Leg, ts: list[float], splits: Sequence[str]
) -> list[dict]:
    """Rows of points `ts` of leg `index` on every split."""
    rows = []
    for split, (loss, acc) in evaluator.points(leg, ts, splits).items():
        rows += table_rows(method, [(index, leg)] * len(ts), ts, split, loss, acc)
    return rows


def table_rows(
    method: str, legs: Sequence[tuple[int, Leg]], ts: Sequence[float], split: str, loss: torch.Tensor, acc: torch.Tensor
) -> list[dict]:
    """Rows of the path table for points (leg index and leg, t) on one split."""
    return [
        dict(
            method=method,
            leg=index,
            leg_name=leg.name,
            stage=leg.stage,
            t=t,
            position=index + t,
            split=split,
            loss=loss[i].item(),
            acc=acc[i].item(),
        )
        for i, ((index, leg), t) in enumerate(zip(legs, ts))
    ]


def swap_runs(path: Path) -> list[list[int]]:
    """Leg indices grouped into runs of consecutive swap legs of one permutation stage; other legs alone."""
    runs: list[list[int]] = []
    previous = None
    for index, leg in enumerate(path):
        swaps = leg.swaps if isinstance(leg, SwapLeg) else None
        if swaps is not None and swaps is previous:
            runs[-1].append(index)
        else:
            runs.append([index])
        previous = swaps
    return runs


def worst_points(table: pd.DataFrame) -> dict[str, dict]:
    """Per split, the worst point (`worst_row`: the paper's metric is its accuracy)."""
    worst = {}
    for split, rows in table.groupby("split"):
        row = worst_row(rows)
        worst[split] = {
            "acc": float(row["acc"]),
            "loss": float(row["loss"]),
            "position": float(row["position"]),
            "leg_name": str(row["leg_name"]),
        }
    return worst


def endpoint_scores(table: pd.DataFrame) -> dict[str, dict[str, float]]:
    """Per split, the accuracy of Θ^A (the table's first position) and Θ^B (its last)."""
    out = {}
    for split, rows in table.groupby("split"):
        ordered = rows.sort_values("position", kind="stable")
        out[split] = {"a": float(ordered["acc"].iloc[0]), "b": float(ordered["acc"].iloc[-1])}
    return out
