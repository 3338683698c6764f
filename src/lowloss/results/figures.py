"""Figures of a report: accuracy along every method's path, and the layer-wise route like the paper's Fig. 5."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd

from lowloss.storage.atomic import write_atomic

SPLITS = ("train", "test")
END_POINTS = "End Points"
BASELINE_PREFIX = "garipov-"  # trained curves, drawn dashed
MAX_STAGE_LEGS = 12  # longer runs of numbered legs (a permutation stage) share one part of the x axis
X_LABEL = r"position along the path, $\Theta^A \to \Theta^B$ (stages of legs scaled equally)"


def stage_positions(table: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """x in [0, 1] of every row of a path table, and the x of the breakpoints to mark.

    Every leg gets an equal share of the axis, except that a run of more than MAX_STAGE_LEGS
    consecutive legs whose names differ only by a trailing number (`swap-h1-0`, `swap-h1-1`, …) shares
    one: OT's hundreds of swap legs then take as much room as its interpolation leg, not all of it.
    Breakpoints are marked at the start of every share.
    """
    legs = table.drop_duplicates("leg").sort_values("leg")
    stems = legs["leg_name"].astype(str).str.replace(r"-\d+$", "", regex=True).to_numpy()
    run = np.cumsum(np.r_[True, stems[1:] != stems[:-1]])
    long_run = np.bincount(run)[run] > MAX_STAGE_LEGS
    stage = np.cumsum(np.r_[True, (run[1:] != run[:-1]) | ~long_run[1:]]) - 1
    size = np.bincount(stage)[stage]
    within = np.arange(len(stage)) - np.searchsorted(stage, stage)
    shares = stage[-1] + 1
    start = (stage + within / size) / shares
    width = 1 / (size * shares)
    index = {leg: i for i, leg in enumerate(legs["leg"])}
    rows = table["leg"].map(index).to_numpy()
    x = start[rows] + table["t"].to_numpy() * width[rows]
    return x, start[(within == 0) & (start > 0)]


def route_positions(table: pd.DataFrame) -> np.ndarray:
    """x of every row of a route's path table: stage k (from Θ_k^AB to Θ_{k+1}^AB) spans [k − 1, k], its
    legs placed within it as `stage_positions` places a path's."""
    x = np.zeros(len(table))
    for stage, rows in table.groupby("stage"):
        x[table.index.get_indexer(rows.index)] = stage - 1 + stage_positions(rows)[0]
    return x


def _pyplot():
    """matplotlib's pyplot on the file-only Agg backend (jobs have no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, out_stem: Path) -> list[Path]:
    """PNG and SVG, each written atomically."""
    written = []
    for suffix in (".png", ".svg"):
        target = out_stem.with_suffix(suffix)
        write_atomic(target, lambda tmp, fmt=suffix[1:]: fig.savefig(tmp, format=fmt, dpi=150))
        written.append(target)
    _pyplot().close(fig)
    return written


def legend_entries(axes, methods: Sequence[str]) -> tuple[list, list[str]]:
    """(handles, labels) of every method drawn in any panel, once, in `methods` order, End Points last:
    experiments may compare different methods, so no single panel holds them all."""
    drawn = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            drawn.setdefault(label, handle)
    labels = [label for label in [*methods, END_POINTS] if label in drawn]
    return [drawn[label] for label in labels], labels


def plot_paths(runs: Sequence, endpoints: dict[tuple[str, int], dict[str, float]], methods: Sequence[str],
               experiments: Sequence[str], out_stem: Path) -> list[Path]:
    """Accuracy along the path: one panel per experiment (columns) and split (rows), one line per method.

    x runs from Θ^A (0) to Θ^B (1), stages of legs scaled to equal width (`stage_positions`); each
    line is the mean over pairs, breakpoints are ticked on it, and the endpoints' mean accuracies are
    drawn at both ends.
    """
    plt = _pyplot()
    palette = plt.get_cmap("tab20").colors
    colors = dict(zip(methods, palette[0::2] + palette[1::2]))  # ten strong colours first, then light ones
    fig, axes = plt.subplots(len(SPLITS), len(experiments), figsize=(5.5 * len(experiments) + 2.5, 7),
                             squeeze=False, sharex=True)
    for col, experiment in enumerate(experiments):
        for row, split in enumerate(SPLITS):
            ax = axes[row, col]
            for method in methods:
                chosen = [run for run in runs if run.experiment == experiment and run.method == method]
                if chosen:
                    _plot_method(ax, chosen, split, colors[method], method,
                                 "--" if method.startswith(BASELINE_PREFIX) else "-")
            _mark_endpoints(ax, runs, endpoints, experiment, split)
            ax.set_title(f"{experiment}: {split}", fontsize=11)
            _accuracy_axis(ax)
            ax.set_xlim(-0.02, 1.02)
        axes[-1, col].set_xlabel(X_LABEL)
    fig.legend(*legend_entries(axes.flat, methods), loc="center right", fontsize=9, frameon=False)
    fig.tight_layout(rect=(0, 0, 1 - 2.3 / fig.get_figwidth(), 1))
    return save_figure(fig, out_stem)


def plot_path(table: pd.DataFrame, title: str):
    """One path table's accuracy along the path, train and test, on the axes of `plot_paths` (a figure
    for the run of the `connect` that wrote it)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    run = SimpleNamespace(table=table)
    for split, color in zip(SPLITS, ("tab:blue", "tab:orange")):
        if (table["split"] == split).any():
            _plot_method(ax, [run], split, color, split, "-")
    _accuracy_axis(ax)
    ax.set_xlim(-0.02, 1.02)
    ax.set_title(title, fontsize=11)
    ax.set_xlabel(X_LABEL)
    ax.legend(frameon=False)
    fig.tight_layout()
    return fig


def plot_routes(runs: Sequence, methods: Sequence[str], experiments: Sequence[str], out_stem: Path) -> list[Path]:
    """The paper's Fig. 5 for every route method (columns) of every deep experiment (rows): train and test
    error along Θ^A → Θ_2^AB → … → Θ^B, mean over pairs, the route points labelled at the stage boundaries."""
    plt = _pyplot()
    fig, axes = plt.subplots(len(experiments), len(methods), figsize=(3.6 * len(methods), 3.2 * len(experiments)),
                             squeeze=False)
    for row, experiment in enumerate(experiments):
        for col, method in enumerate(methods):
            ax = axes[row, col]
            chosen = [run for run in runs if run.experiment == experiment and run.method == method]
            if not chosen:
                ax.set_axis_off()
                continue
            for split, style in zip(SPLITS, ("-", "--")):
                curves = []
                for run in chosen:
                    x = route_positions(run.table)
                    rows = (run.table["split"] == split).to_numpy()
                    order = np.argsort(x[rows], kind="stable")
                    curves.append((x[rows][order], 100 * (1 - run.table["acc"].to_numpy()[rows][order])))
                grid = np.unique(np.concatenate([x for x, _ in curves]))
                ax.plot(grid, np.mean([np.interp(grid, x, y) for x, y in curves], axis=0), style,
                        color="C0" if split == "train" else "C3", label=f"{split} error")
            stages = int(chosen[0].table["stage"].max())
            ax.set_xticks(range(stages + 1), _route_labels(stages))
            ax.grid(alpha=0.3)
            ax.set_title(f"{experiment}: {method}", fontsize=10)
            if col == 0:
                ax.set_ylabel("error (%)")
    axes[0, 0].legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, out_stem)


def _route_labels(stages: int) -> list[str]:
    """Θ^A, Θ_2^AB, …, Θ^B at the boundaries of `stages` stages."""
    return [r"$\Theta^A$", *(rf"$\Theta_{{{k}}}^{{AB}}$" for k in range(2, stages + 1)), r"$\Theta^B$"]


def _accuracy_axis(ax) -> None:
    """Accuracy on a logit scale, labelled in percent: the methods near the endpoints stay apart
    (98 % and 96 % are as far apart as 92 % and 84 %) while a deep dip stays on the plot."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    ax.set_yscale("logit", nonpositive="clip")
    ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{100 * value:g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.set_ylabel("accuracy (%, logit scale)")
    ax.grid(alpha=0.3, which="both")


def _plot_method(ax, runs: Sequence, split: str, color, label: str, style: str) -> None:
    """Mean over pairs of one method's accuracy, on the union of the pairs' x values."""
    curves, breaks = [], []
    for run in runs:
        x, run_breaks = stage_positions(run.table)
        chosen = (run.table["split"] == split).to_numpy()
        order = np.argsort(x[chosen], kind="stable")
        curves.append((x[chosen][order], run.table["acc"].to_numpy()[chosen][order]))
        breaks.append(run_breaks)
    grid = np.unique(np.concatenate([x for x, _ in curves]))
    mean = np.mean([np.interp(grid, x, y) for x, y in curves], axis=0)
    ax.plot(grid, mean, style, color=color, label=label, linewidth=1.5)
    if len(breaks[0]):
        ax.plot(breaks[0], np.interp(breaks[0], grid, mean), "|", color=color, markersize=9, markeredgewidth=1.5)


def _mark_endpoints(ax, runs: Sequence, endpoints: dict[tuple[str, int], dict[str, float]], experiment: str,
                    split: str) -> None:
    """Θ^A at x = 0 and Θ^B at x = 1: mean over pairs of the endpoints' accuracies."""
    seeds = {run.seeds for run in runs if run.experiment == experiment}
    if not seeds:
        return
    a = np.mean([endpoints[experiment, s[0]][split] for s in seeds])
    b = np.mean([endpoints[experiment, s[1]][split] for s in seeds])
    ax.plot([0, 1], [a, b], "o", color="black", markersize=7, label=END_POINTS, zorder=5)


def plot_ensembles(table: pd.DataFrame, best_label: str, out_stem: Path) -> list[Path]:
    """The paper's Fig. 7, one panel per experiment: test accuracy against the number of models in the
    ensemble, one line per method (`ensembles_table`'s rows), the best single model as a dashed line."""
    return _ensemble_panels(table, best_label, "models", "number of models in the ensemble", out_stem)


def plot_ensemble_costs(table: pd.DataFrame, best_label: str, out_stem: Path) -> list[Path]:
    """Test accuracy against inference FLOPs per sample (× one model), one panel per experiment: what each
    extra point of accuracy costs with each method (the marks are ensemble sizes 1, 2, …)."""
    return _ensemble_panels(table, best_label, "flops_ratio", "inference FLOPs per sample (× one model)", out_stem)


def _ensemble_panels(table: pd.DataFrame, best_label: str, x: str, xlabel: str, out_stem: Path) -> list[Path]:
    plt = _pyplot()
    experiments = list(dict.fromkeys(table["experiment"]))
    fig, axes = plt.subplots(1, len(experiments), figsize=(4.8 * len(experiments), 3.8), squeeze=False)
    for ax, experiment in zip(axes[0], experiments):
        rows = table[table["experiment"] == experiment]
        for i, (label, line) in enumerate(rows[rows["label"] != best_label].groupby("label", sort=False)):
            line = line.sort_values("models")
            ax.plot(line[x], line["test_acc"], "o-", color=f"C{i}", label=label, markersize=4)
            if x != "models":  # mark each point with its number of models
                for n, cost, acc in line[["models", x, "test_acc"]].itertuples(index=False):
                    ax.annotate(str(n), (cost, acc), textcoords="offset points", xytext=(3, 3), fontsize=7,
                                color=f"C{i}")
        for best in rows.loc[rows["label"] == best_label, "test_acc"]:
            ax.axhline(best, color="black", linestyle="--", linewidth=1, label=best_label)
        if x == "models":
            ax.set_xticks(sorted(rows["models"].unique()))
        ax.set_xlabel(xlabel)
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(experiment, fontsize=11)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, out_stem)
