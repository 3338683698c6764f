"""Connect two networks: a method's path between them, evaluated along its length on the data.

`connect` is the Python API; `lowloss connect` reads its files and options and calls `connect_endpoints`, the
same code path, then writes the table.
"""

from __future__ import annotations

import copy
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from torch import nn

from lowloss.api.data import DataInput, dataset_of, labels_only
from lowloss.api.defaults import POINTS, REPAIR_BATCHES
from lowloss.api.models import Endpoints, ModelInput, endpoints_of, for_data
from lowloss.errors import LowlossError
from lowloss.evaluate.engine import endpoint_scores, evaluate_path, worst_points
from lowloss.evaluate.fixes import PointFix, point_fixes
from lowloss.methods.context import DEFAULT_BREAKPOINTS, Context, Options
from lowloss.methods.registry import Method, get_method
from lowloss.nets.network import Network
from lowloss.nets.params import on_device, unstack_params
from lowloss.paths.legs import Path as ConnectionPath
from lowloss.results.figures import plot_path, save_figure
from lowloss.storage.path_table import SECONDS_COLUMNS, path_table_frame, screened
from lowloss.storage.weights import Artifact, load_weights
from lowloss.training.data import Dataset, Normalize
from lowloss.training.user_data import UserSplit


@dataclass(frozen=True)
class Connection:
    """A method's path between two networks and its evaluation.

    `evaluated` holds one row per evaluated point and split (leg, t, position = leg + t, loss, accuracy as a
    fraction); `fixes` are what was done to every point before it was evaluated (BatchNorm statistics
    measured on it, REPAIR), and `model_at` does the same. The seconds: those the fitted files the method read
    record (`fit_seconds`), of building the path and of evaluating it, and of the whole call.
    """

    method: Method
    path: ConnectionPath
    network: Network
    evaluated: pd.DataFrame
    arch: str
    fixes: dict[str, PointFix]
    fit_seconds: float
    build_seconds: float
    evaluate_seconds: float
    seconds: float

    @property
    def cost(self) -> dict[str, float]:
        """The path's cost in seconds, as the path table records it (`SECONDS_COLUMNS`)."""
        return {column: round(getattr(self, column), 3) for column in SECONDS_COLUMNS}

    @property
    def table(self) -> pd.DataFrame:
        """The path table, as `lowloss connect` writes it (`lowloss.storage.path_table`)."""
        return path_table_frame(self.evaluated, self.arch, self.cost)

    @property
    def worst(self) -> dict[str, dict]:
        """Per split, the point of lowest accuracy: its accuracy, loss, position and leg (the paper's metric)."""
        return worst_points(self.evaluated)

    @property
    def endpoint_accuracy(self) -> dict[str, dict[str, float]]:
        """Per split, the accuracy of Θ^A (`a`) and Θ^B (`b`), evaluated like the path."""
        return endpoint_scores(self.evaluated)

    def figure(self, title: str | None = None):
        """A matplotlib figure of accuracy along the path, train and test."""
        return plot_path(self.evaluated, title or f"{self.method.name}: {self.arch}")

    def save_figure(self, stem: str | os.PathLike, title: str | None = None) -> list[Path]:
        """The figure as `stem.png` and `stem.svg`, written atomically."""
        return save_figure(self.figure(title), Path(stem))

    def model_at(self, position: float) -> nn.Module:
        """The network at `position` on the path (leg index + t, from 0 at Θ^A to the number of legs at Θ^B), with
        the point's fixes applied: an ordinary nn.Module on CPU, in eval mode."""
        legs = self.path.legs
        if not 0 <= position <= len(legs):
            raise LowlossError(f"position {position} is outside the path, which runs from 0 to {len(legs)}")
        index = min(int(position), len(legs) - 1)
        leg, t = legs[index], position - index
        device = next(self.network.model.parameters()).device
        stacked = on_device(leg.at([t]), device)
        for fix in self.fixes.values():
            stacked = fix(stacked, [leg], [t])
        model = copy.deepcopy(self.network.model)
        model.load_state_dict(unstack_params(stacked, 0))
        return model.cpu().eval()

    def summary(self) -> dict:
        """What `lowloss connect` reports: the worst point of every split, the endpoints' accuracies, the path's
        size, the samples of the fixes and the time taken."""
        worst, ends = self.worst, self.endpoint_accuracy
        splits = [split for split in ("train", "test") if split in worst]
        last = splits[-1]
        result = {"method": self.method.name}
        for score in ("acc", "loss"):
            result.update({f"worst_{split}_{score}": worst[split][score] for split in splits})
        result[f"worst_{last}_position"] = worst[last]["position"]
        result.update({f"endpoint_{split}_acc": min(ends[split].values()) for split in splits})
        points = len(self.evaluated.drop_duplicates(["leg", "t"]))  # on either split (`auto` searches each on its own)
        result.update(legs=len(self.path), points=points)
        unscored = self.evaluated[screened(self.evaluated)]  # `screen_swaps`: swap legs without their loss
        if len(unscored):
            result["screened"] = len(unscored.drop_duplicates(["leg", "t"]))
        result.update({f"{name}_samples": fix.samples for name, fix in self.fixes.items()})
        result.update(self.cost, seconds=round(self.seconds, 3))
        return result


def point_fixes_for(
    method: Method, network: Network, data: Dataset, seed: int, bn_batches: int | None, repair_batches: int | None
) -> dict[str, PointFix]:
    """BatchNorm statistics measured at every point (`bn_batches`) and, for a `*+repair` method, REPAIR on
    `repair_batches` (default REPAIR_BATCHES; refused for other methods)."""
    if repair_batches is not None and not method.repair:
        raise LowlossError(f"--repair-batches applies to *+repair methods, not to {method.name!r}")
    repair = (repair_batches or REPAIR_BATCHES) if method.repair else None
    return point_fixes(network, data.x_train, seed, bn_batches, repair)


def connect_endpoints(
    endpoints: Endpoints,
    data: Dataset,
    method: Method,
    options: Options,
    points: int | str = POINTS,
    repair_batches: int | None = None,
    connector: Artifact | None = None,
    curve: Artifact | None = None,
    matching: Artifact | None = None,
    started: float | None = None,
    screen_swaps: bool = False,
) -> Connection:
    """Build `method`'s path between the endpoints and evaluate it on every split `data` holds (the endpoints
    already checked against the data, `for_data`). `started`: when the work began (perf_counter), for the
    timings. `screen_swaps`: see `evaluate_path`."""
    started = time.perf_counter() if started is None else started
    device = data.x_train.device
    ctx = Context(endpoints.network(device), data, options, endpoints.artifacts, connector, curve, matching)
    method.check(ctx.network, endpoints.arch, ctx)
    fixes = point_fixes_for(method, ctx.network, data, options.seed, options.bn_batches, repair_batches)
    theta_a, theta_b = endpoints.params(device)
    building = time.perf_counter()
    path = method.build(theta_a, theta_b, ctx)
    built = time.perf_counter()
    splits = ("train", "test") if len(data.y_test) else ("train",)
    evaluated = evaluate_path(
        ctx.network,
        path,
        data,
        points,
        splits,
        progress=options.progress,
        fixes=list(fixes.values()),
        screen_swaps=screen_swaps,
    )
    evaluated_at = time.perf_counter()
    return Connection(
        method,
        path,
        ctx.network,
        evaluated,
        endpoints.arch,
        fixes,
        ctx.fitted_seconds,
        built - building,
        evaluated_at - built,
        evaluated_at - started,
    )


def connect(
    model_a: ModelInput,
    model_b: ModelInput,
    method: str = "ot+wa",
    *,
    train: DataInput,
    test: UserSplit | None = None,
    points: int | str = POINTS,
    screen_swaps: bool = False,
    freeze: Sequence[str] = (),
    bn_batches: int | None = None,
    repair_batches: int | None = None,
    wa_breakpoints: int | str = DEFAULT_BREAKPOINTS,
    wa_samples: int | None = None,
    ot_solver: str = "emd",
    wm_sweeps: int | None = None,
    curve: str | os.PathLike | None = None,
    connector: str | os.PathLike | None = None,
    matching: str | os.PathLike | None = None,
    allow_seen: bool = False,
    seed: int = 0,
    device: str | torch.device = "auto",
    input_size: Sequence[int] | None = None,
    normalize: Normalize | None = None,
    data_root: str | os.PathLike = "data",
    progress: bool = True,
) -> Connection:
    """Connect two networks by `method` (see `lowloss methods`) and evaluate the path on the data.

    Args:
        model_a, model_b: two nn.Modules of one architecture (left unchanged), or two lowloss model files.
        method: the connection method, e.g. `linear`, `weight-matching`, `ot+wa`, `ot+wa+repair`.
        train: a named dataset (`digits`, `fashion-mnist`, …), a lowloss `Dataset`, or the user's training
            split as a torch Dataset, a DataLoader or (x, y) tensors. Route methods fit on it.
        test: the user's test split, in the same forms (none: only the training split is evaluated).
        points: evaluated points per leg, or `auto`: a coarse grid, then a search of each split's worst point
            (`lowloss.evaluate.adaptive`).
        screen_swaps: screen the legs of permutation stages (dense layers after the group's reader): every leg's
            accuracy exact at a fraction of the cost, the loss only of each stage's legs of its lowest accuracy
            (NaN elsewhere), the same worst points (`lowloss.evaluate.swaps`).
        freeze: modules whose units stay in place (for a model whose spec is inferred).
        bn_batches: measure BatchNorm's statistics at every point on this many training batches of 128.
        repair_batches: `*+repair` methods: the training batches REPAIR measures channel statistics on.
        wa_breakpoints, wa_samples, ot_solver, wm_sweeps: the route's, OT's and weight matching's options
            (`lowloss connect --help`).
        curve, connector, matching: fitted files a method reads (Garipov curves, learned flows, a matching).
        seed: seed of every random choice.
        device: `auto` (CUDA when available), `cpu`, `cuda:N`.
        input_size, normalize: a named dataset resized to (C, H, W) and normalised by (mean, deviation), each a
            number or one per channel (default: standardised with the training split's statistics).

    Returns:
        The `Connection`: its table, worst points, figure, path and `model_at(position)`.
    """
    started = time.perf_counter()
    chosen = get_method(method)
    endpoints = endpoints_of(model_a, model_b, freeze)
    data = dataset_of(
        train,
        test,
        device=device,
        input_size=input_size,
        normalize=normalize,
        data_root=data_root,
        progress=progress,
    )
    endpoints, data = for_data(endpoints, data, labels_only(train))
    options = Options(
        wa_breakpoints=wa_breakpoints,
        wa_samples=wa_samples,
        bn_batches=bn_batches,
        ot_solver=ot_solver,
        wm_sweeps=wm_sweeps,
        seed=seed,
        allow_seen=allow_seen,
        progress=progress,
    )
    files = {
        name: None if file is None else load_weights(file)
        for name, file in (("connector", connector), ("curve", curve), ("matching", matching))
    }
    return connect_endpoints(
        endpoints, data, chosen, options, points, repair_batches, started=started, screen_swaps=screen_swaps, **files
    )
