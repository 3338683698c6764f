"""The paper's Table 1 and accuracy-along-the-path figures, from the path tables of a run.

A path table (`lowloss connect --out`) has one row per (leg, t, split). The report reads them where
the workflow writes them, `<results>/<experiment>/paths/<method>/<seed A>-<seed B>.csv`, and the
endpoints' sidecars beside them, `<results>/<experiment>/models/seed<N>.json`. Table 1's cell is the
mean ± one standard deviation over pairs of the worst accuracy along the path (paper §5.1), in percent;
the "End Points" row is, per pair, the lower of the two endpoints' accuracies.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from lowloss.artifacts import write_atomic, write_text_atomic
from lowloss.errors import LowlossError

END_POINTS = "End Points"
SPLITS = ("train", "test")
TABLE_FILES = ("table1.csv", "table1.md", "table1.tex", "worst_points.csv")
PATH_NAME = re.compile(r"(?P<a>\d+)-(?P<b>\d+)\.csv")
BASELINE_PREFIX = "garipov-"  # trained curves, drawn dashed
MAX_STAGE_LEGS = 12  # longer runs of numbered legs (a permutation stage) share one part of the x axis
X_LABEL = r"position along the path, $\Theta^A \to \Theta^B$ (stages of legs scaled equally)"


@dataclass(frozen=True)
class PathRun:
    """One evaluated path: which experiment, method and pair of seeds, and its table."""

    experiment: str
    method: str
    seeds: tuple[int, int]
    table: pd.DataFrame

    @property
    def pair(self) -> str:
        return f"{self.seeds[0]}-{self.seeds[1]}"


def load_path_run(csv: str | os.PathLike) -> PathRun:
    """Read a path table and its experiment/method/pair from its place in the results tree."""
    csv = Path(csv)
    match = PATH_NAME.fullmatch(csv.name)
    if match is None or csv.parent.parent.name != "paths":
        raise LowlossError(f"{csv}: expected a path table at <experiment>/paths/<method>/<seedA>-<seedB>.csv")
    if not csv.is_file():
        raise LowlossError(f"{csv}: file not found")
    table = pd.read_csv(csv)
    missing = {"split", "position", "leg", "acc", "loss"} - set(table.columns)
    if missing or table.empty:
        raise LowlossError(f"{csv}: not a path table (missing columns {sorted(missing)} or no rows)")
    return PathRun(experiment=csv.parent.parent.parent.name, method=csv.parent.name,
                   seeds=(int(match["a"]), int(match["b"])), table=table)


def endpoint_accuracy(csv: str | os.PathLike, seed: int) -> dict[str, float]:
    """Train and test accuracy (fractions) of the endpoint of `seed`, from its sidecar."""
    sidecar = Path(csv).parent.parent.parent / "models" / f"seed{seed}.json"
    try:
        meta = json.loads(sidecar.read_text())
        return {split: float(meta[f"{split}_acc"]) for split in SPLITS}
    except (OSError, ValueError, KeyError) as exc:
        raise LowlossError(f"{sidecar}: cannot read the endpoint's accuracy ({exc})") from None


def worst_points(runs: Sequence[PathRun], endpoints: dict[tuple[str, int], dict[str, float]]) -> pd.DataFrame:
    """Tidy table: per experiment, method, pair and split the worst accuracy (%) along the path, its
    loss and position; plus the End Points rows (the lower endpoint accuracy of each pair)."""
    rows = []
    for run in runs:
        for split, points in run.table.groupby("split"):
            worst = points.loc[points["acc"].idxmin()]
            rows.append(dict(experiment=run.experiment, method=run.method, pair=run.pair, split=split,
                             worst_acc=100 * float(worst["acc"]), worst_loss=float(worst["loss"]),
                             position=float(worst["position"])))
    pairs = dict.fromkeys((run.experiment, run.pair, run.seeds) for run in runs)
    for experiment, pair, (a, b) in pairs:
        for split in SPLITS:
            lower = min(endpoints[experiment, a][split], endpoints[experiment, b][split])
            rows.append(dict(experiment=experiment, method=END_POINTS, pair=pair, split=split,
                             worst_acc=100 * lower, worst_loss=np.nan, position=np.nan))
    return pd.DataFrame(rows)


def table1(worst: pd.DataFrame, methods: Sequence[str], experiments: Sequence[str]) -> pd.DataFrame:
    """Table 1's layout: rows = methods + End Points, columns = (experiment, split), cells `mean ± std`."""
    stats = worst.groupby(["method", "experiment", "split"])["worst_acc"].agg(["mean", "std", "count"])
    # As in the paper: experiments over train/test, "Methods" heading the row labels.
    columns = pd.MultiIndex.from_product([experiments, SPLITS], names=[None, "Methods"])
    index = pd.Index([*methods, END_POINTS])
    cells = pd.DataFrame("", index=index, columns=columns)
    for (method, experiment, split), row in stats.iterrows():
        if method in index and experiment in experiments and split in SPLITS:
            cells.loc[method, (experiment, split)] = format_cell(row["mean"], row["std"], int(row["count"]))
    return cells


def format_cell(mean: float, std: float, count: int) -> str:
    """`97.86 ± 0.05`; a single pair has no spread to show."""
    return f"{mean:.2f}" if count < 2 or np.isnan(std) else f"{mean:.2f} ± {std:.2f}"


def to_markdown(table: pd.DataFrame) -> str:
    """GitHub Markdown with one header row: `<experiment> <split>` per column."""
    flat = table.copy()
    flat.columns = [f"{experiment} {split}" for experiment, split in table.columns]
    flat.index.name = "Methods"
    return flat.to_markdown(colalign=["left"] + ["right"] * len(flat.columns)) + "\n"


def to_latex(table: pd.DataFrame) -> str:
    """booktabs LaTeX with the experiment spanning its train/test columns, ± as $\\pm$."""
    latex = table.map(lambda cell: cell.replace("±", r"$\pm$"))
    styler = latex.style.format_index(escape="latex", axis=0).format_index(escape="latex", axis=1)
    return styler.to_latex(hrules=True, multicol_align="c", column_format="l" + "r" * len(table.columns))


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


def plot_paths(runs: Sequence[PathRun], endpoints: dict[tuple[str, int], dict[str, float]],
               methods: Sequence[str], experiments: Sequence[str], out_stem: Path) -> list[Path]:
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
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="center right", fontsize=9, frameon=False)
    fig.tight_layout(rect=(0, 0, 1 - 2.3 / fig.get_figwidth(), 1))
    written = []
    for suffix in (".png", ".svg"):
        target = out_stem.with_suffix(suffix)
        write_atomic(target, lambda tmp, fmt=suffix[1:]: fig.savefig(tmp, format=fmt, dpi=150))
        written.append(target)
    plt.close(fig)
    return written


def plot_path(table: pd.DataFrame, title: str):
    """One path table's accuracy along the path, train and test, on the axes of `plot_paths` (a figure
    for the run of the `connect` that wrote it)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    run = PathRun(experiment="", method=title, seeds=(0, 1), table=table)
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


def _pyplot():
    """matplotlib's pyplot on the file-only Agg backend (jobs have no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _accuracy_axis(ax) -> None:
    """Accuracy on a logit scale, labelled in percent: the methods near the endpoints stay apart
    (98 % and 96 % are as far apart as 92 % and 84 %) while a deep dip stays on the plot."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    ax.set_yscale("logit", nonpositive="clip")
    ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{100 * value:g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.set_ylabel("accuracy (%, logit scale)")
    ax.grid(alpha=0.3, which="both")


def _plot_method(ax, runs: Sequence[PathRun], split: str, color, label: str, style: str) -> None:
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


def _mark_endpoints(ax, runs: Sequence[PathRun], endpoints: dict[tuple[str, int], dict[str, float]],
                    experiment: str, split: str) -> None:
    """Θ^A at x = 0 and Θ^B at x = 1: mean over pairs of the endpoints' accuracies."""
    seeds = {run.seeds for run in runs if run.experiment == experiment}
    if not seeds:
        return
    a = np.mean([endpoints[experiment, s[0]][split] for s in seeds])
    b = np.mean([endpoints[experiment, s[1]][split] for s in seeds])
    ax.plot([0, 1], [a, b], "o", color="black", markersize=7, label=END_POINTS, zorder=5)


def build_report(csvs: Sequence[str | os.PathLike], out_dir: str | os.PathLike) -> dict:
    """Read every path table, write Table 1 (CSV, Markdown, LaTeX), the tidy worst points and the figure.

    Rows keep the order in which methods first appear in `csvs`, columns the order of experiments.
    Returns the command's summary: counts and the files written.
    """
    if not csvs:
        raise LowlossError("no path tables given")
    out_dir = Path(out_dir)
    runs = [load_path_run(csv) for csv in csvs]
    endpoints = {(run.experiment, seed): endpoint_accuracy(csv, seed)
                 for run, csv in zip(runs, csvs) for seed in run.seeds}
    methods = list(dict.fromkeys(run.method for run in runs))
    experiments = list(dict.fromkeys(run.experiment for run in runs))
    worst = worst_points(runs, endpoints)
    table = table1(worst, methods, experiments)
    write_text_atomic(out_dir / "table1.csv", table.to_csv())
    write_text_atomic(out_dir / "table1.md", to_markdown(table))
    write_text_atomic(out_dir / "table1.tex", to_latex(table))
    write_text_atomic(out_dir / "worst_points.csv", worst.to_csv(index=False))
    figures = plot_paths(runs, endpoints, methods, experiments, out_dir / "paths")
    files = [out_dir / name for name in TABLE_FILES] + figures
    return {"out_dir": str(out_dir), "experiments": len(experiments), "methods": len(methods),
            "paths": len(runs), "files": [str(f) for f in files]}
