"""Figures of a report: accuracy along every method's path, the layer-wise route like the paper's Fig. 5, the
ensembles' Fig. 7 and cost, each method's accuracy against its seconds, and curves' worst accuracy against their
fitting budget; each as PNG, SVG and PDF in one colour-blind-safe style."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd

from lowloss.storage.atomic import write_atomic

SPLITS = ("train", "test")
END_POINTS = "End Points"
MAX_STAGE_LEGS = 12  # longer runs of numbered legs (a permutation stage) share one part of the x axis
X_LABEL = "position along the path (each stage of legs an equal share)"
ACCURACY_LABEL = "accuracy (%, logit scale)"
SPLIT_STYLES = {"train": "-", "test": "--"}  # colour and dash both tell the splits apart (print, colour blindness)
PALETTE_STYLE = "petroff10"  # matplotlib's colour-blind-safe cycle (Petroff 2021)
FIGURE_SUFFIXES = (".png", ".svg", ".pdf")
PNG_DPI = 150
PATH_LAYOUT = (5, (2.4, 1.7), (True, True))  # `_method_panels`: most columns, panel size, shared axes
ROUTE_LAYOUT = (3, (2.9, 2.1), (False, "row"))
ROUTE_AXIS_TITLES = ("error (%)", r"route point (each stage switches one layer group from $\Theta^A$ to $\Theta^B$)")
LOGIT_TICKS = [0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.8, 0.9, 0.95, 0.97, 0.98, 0.99, 0.995, 0.998, 0.999]
ENSEMBLE_MARKERS = "osD^vP*X"  # one per method line, told apart in grey print too


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
    """matplotlib's pyplot on the file-only Agg backend (jobs have no display), in the report's style."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update(_style())
    return plt


def _style() -> dict:
    """Colour-blind-safe colours (matplotlib's `petroff10`), sizes readable where the report shows
    a figure at about its own size, and fonts kept as text in SVG and as TrueType in PDF (editable)."""
    import matplotlib

    style = dict(matplotlib.style.library[PALETTE_STYLE])
    style.update(
        {
            "font.size": 10,
            "axes.titlesize": 10.5,
            "axes.labelsize": 10,
            "xtick.labelsize": 9,
            "ytick.labelsize": 9,
            "legend.fontsize": 9.5,
            "figure.titlesize": 11.5,
            "figure.titleweight": "bold",
            "svg.fonttype": "none",
            "pdf.fonttype": 42,
            "axes.spines.top": False,
            "axes.spines.right": False,
        }
    )
    return style


def colors() -> list[str]:
    """The colour-blind-safe cycle every figure draws with."""
    import matplotlib

    return matplotlib.style.library[PALETTE_STYLE]["axes.prop_cycle"].by_key()["color"]


def save_figure(fig, out_stem: Path) -> list[Path]:
    """PNG for screens, SVG and PDF for a paper (vector, fonts kept as text), each written atomically."""
    written = []
    for suffix in FIGURE_SUFFIXES:
        target = out_stem.with_suffix(suffix)
        write_atomic(target, lambda tmp, fmt=suffix[1:]: fig.savefig(tmp, format=fmt, dpi=PNG_DPI))
        written.append(target)
    _pyplot().close(fig)
    return written


def legend_entries(axes, methods: Sequence[str]) -> tuple[list, list[str]]:
    """(handles, labels) of every label drawn in any panel, once, in `methods` order, End Points last:
    panels may draw different methods, so no single panel holds them all."""
    drawn = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            drawn.setdefault(label, handle)
    labels = [label for label in [*methods, END_POINTS] if label in drawn]
    return [drawn[label] for label in labels], labels


def panel_grid(count: int, max_columns: int) -> tuple[int, int]:
    """(rows, columns) of a near-square grid holding `count` panels, at least 3 (fewer panels: as many)
    and at most `max_columns` wide: the figure then stays about as wide as it is tall, and the report,
    which scales a figure to its width, shows all of it."""
    columns = max(1, min(count, max_columns, max(3, math.ceil(math.sqrt(count)))))
    return -(-count // columns), columns


def _method_panels(runs: Sequence, methods: Sequence[str], experiment: str, layout: tuple, axis_titles: tuple):
    """One figure of an experiment: a panel per method it has, titled, in a grid; the experiment as the
    figure's title, the axis titles around the grid (constrained layout).

    `layout` is (most columns, panel width and height in inches, matplotlib's (sharex, sharey): True for
    every panel, "row" for the panels of a row). Returns (figure, [(axes, the method's runs)]).
    """
    plt = _pyplot()
    max_columns, (width, height), (share_x, share_y) = layout
    names = [m for m in methods if any(r.experiment == experiment and r.method == m for r in runs)]
    rows, columns = panel_grid(len(names), max_columns)
    fig, axes = plt.subplots(
        rows,
        columns,
        sharex=share_x,
        sharey=share_y,
        squeeze=False,
        layout="constrained",
        figsize=(1.2 + width * columns, 1.1 + (height + 0.5) * rows),
    )
    for ax in axes.flat[len(names) :]:
        ax.set_axis_off()
    panels = []
    for ax, method in zip(axes.flat, names):
        ax.set_title(method)
        panels.append((ax, [r for r in runs if r.experiment == experiment and r.method == method]))
    fig.suptitle(experiment)
    fig.supylabel(axis_titles[0], fontsize=10)
    fig.supxlabel(axis_titles[1], fontsize=10)
    return fig, panels


def _one_legend(fig, panels: Sequence, labels: Sequence[str]) -> None:
    """The figure's one legend, right of its panels (the experiment's name is above them, the x axis'
    title below)."""
    handles, names = legend_entries([ax for ax, _ in panels], labels)
    fig.legend(handles, names, loc="outside right upper", frameon=False)


def plot_paths(
    runs: Sequence,
    endpoints: dict[tuple[str, int], dict[str, float]],
    methods: Sequence[str],
    experiment: str,
    out_stem: Path,
) -> list[Path]:
    """Accuracy along the path in one experiment: a panel per method (small multiples, so that no line
    hides another), each with train and test (the mean over pairs) and the endpoints.

    x runs from Θ^A (0) to Θ^B (1), stages of legs scaled to equal width (`stage_positions`), their
    starts ticked on the line; y is the accuracy on a logit scale, shared by every panel.
    """
    fig, panels = _method_panels(runs, methods, experiment, PATH_LAYOUT, (ACCURACY_LABEL, X_LABEL))
    split_colors = dict(zip(SPLITS, colors()))
    for ax, chosen in panels:
        for split in SPLITS:
            _plot_method(ax, chosen, split, split_colors[split], split, SPLIT_STYLES[split])
        _mark_endpoints(ax, runs, endpoints, experiment)
        _accuracy_axis(ax)
        _path_axis(ax)
    shared = panels[0][0]  # every panel shares its y axis
    shared.set_yticks(logit_ticks(*shared.get_ylim()))
    _one_legend(fig, panels, SPLITS)
    return save_figure(fig, out_stem)


def plot_path(table: pd.DataFrame, title: str):
    """One path table's accuracy along the path, train and test, on the axes of `plot_paths` (a figure
    for the run of the `connect` that wrote it)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.8), layout="constrained")
    run = SimpleNamespace(table=table)
    for split, color in zip(SPLITS, colors()):
        if (table["split"] == split).any():
            _plot_method(ax, [run], split, color, split, SPLIT_STYLES[split])
    _accuracy_axis(ax)
    _path_axis(ax)
    ax.set_ylabel(ACCURACY_LABEL)
    ax.set_title(title)
    ax.set_xlabel(X_LABEL)
    ax.legend(frameon=False)
    return fig


def plot_routes(runs: Sequence, methods: Sequence[str], experiment: str, out_stem: Path) -> list[Path]:
    """The paper's Fig. 5 for every route method of a deep experiment: a panel per method, train and test
    error along Θ^A → Θ_2^AB → … → Θ^B (mean over pairs), the route points labelled at the stage
    boundaries; the panels of a row share their y axis."""
    fig, panels = _method_panels(runs, methods, experiment, ROUTE_LAYOUT, ROUTE_AXIS_TITLES)
    split_colors = dict(zip(SPLITS, colors()))
    for ax, chosen in panels:
        for split in SPLITS:
            curves = []
            for run in chosen:
                x = route_positions(run.table)
                rows = (run.table["split"] == split).to_numpy()
                order = np.argsort(x[rows], kind="stable")
                curves.append((x[rows][order], 100 * (1 - run.table["acc"].to_numpy()[rows][order])))
            grid = np.unique(np.concatenate([x for x, _ in curves]))
            mean = np.mean([np.interp(grid, x, y) for x, y in curves], axis=0)
            ax.plot(grid, mean, SPLIT_STYLES[split], color=split_colors[split], label=f"{split} error")
        stages = int(chosen[0].table["stage"].max())
        ax.set_xticks(range(stages + 1), _route_labels(stages))
        ax.tick_params(axis="x", labelbottom=True)
        ax.grid(alpha=0.3)
    _one_legend(fig, panels, [f"{split} error" for split in SPLITS])
    return save_figure(fig, out_stem)


def _route_labels(stages: int) -> list[str]:
    """Θ^A, Θ_2^AB, …, Θ^B at the boundaries of `stages` stages."""
    return [r"$\Theta^A$", *(rf"$\Theta_{{{k}}}^{{AB}}$" for k in range(2, stages + 1)), r"$\Theta^B$"]


def _path_axis(ax) -> None:
    """x from Θ^A to Θ^B, the two ends named."""
    ax.set_xlim(-0.03, 1.03)
    ax.set_xticks([0, 0.5, 1], [r"$\Theta^A$", "", r"$\Theta^B$"])
    ax.tick_params(axis="x", labelbottom=True)


def logit_ticks(low: float, high: float, most: int = 6) -> list[float]:
    """Accuracies to label on a logit axis from `low` to `high`: round values (99 %, 98 %, 95 %, 90 % …),
    at most `most`, evenly spread, the ones near the top (where the endpoints are) first."""
    inside = [value for value in LOGIT_TICKS if low <= value <= high]
    logit = lambda value: math.log(value / (1 - value))  # noqa: E731
    gap = (logit(max(inside, default=high)) - logit(min(inside, default=low))) / most
    chosen: list[float] = []
    for value in reversed(inside):
        if not chosen or logit(chosen[-1]) - logit(value) >= gap:
            chosen.append(value)
    return sorted(chosen)


def _accuracy_axis(ax) -> None:
    """Accuracy on a logit scale, labelled in percent: the methods near the endpoints stay apart
    (98 % and 96 % are as far apart as 92 % and 84 %) while a deep dip stays on the plot."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    ax.set_yscale("logit", nonpositive="clip")
    ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{100 * value:g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.grid(alpha=0.3, which="major")


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
    ax.plot(grid, mean, style, color=color, label=label, linewidth=1.4)
    if len(breaks[0]):
        ax.plot(breaks[0], np.interp(breaks[0], grid, mean), "|", color=color, markersize=7, markeredgewidth=1.2)


def _mark_endpoints(ax, runs: Sequence, endpoints: dict[tuple[str, int], dict[str, float]], experiment: str) -> None:
    """Θ^A at x = 0 and Θ^B at x = 1: mean over pairs of the endpoints' accuracies, one dot per split."""
    seeds = {run.seeds for run in runs if run.experiment == experiment}
    for split in SPLITS:
        a = np.mean([endpoints[experiment, s[0]][split] for s in seeds])
        b = np.mean([endpoints[experiment, s[1]][split] for s in seeds])
        ax.plot([0, 1], [a, b], "o", color="black", markersize=4, label=END_POINTS, zorder=5)


def plot_costs(points: pd.DataFrame, methods: Sequence[str], experiment: str, out_stem: Path) -> list[Path]:
    """Worst test accuracy against a path's seconds (fit + build + evaluate, log axis), one mark per pair in its
    method's colour; the Pareto front (no path cheaper and better) as a black step line through ringed marks."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.0), layout="constrained")
    drawn = [method for method in methods if (points["method"] == method).any()]
    for method, color in zip(drawn, colors() * (len(drawn) // len(colors()) + 1)):
        rows = points[points["method"] == method]
        ax.plot(rows["seconds"], rows["worst_acc"], "o", color=color, label=method, markersize=5)
    front = points[points["pareto"]].sort_values("seconds")
    if len(front):
        ax.step(front["seconds"], front["worst_acc"], where="post", color="black", linewidth=1, label="Pareto front")
        ax.plot(front["seconds"], front["worst_acc"], "o", markersize=9, markerfacecolor="none", color="black")
        ax.set_xscale("log")
    else:
        ax.text(0.5, 0.5, "no path of this experiment records its seconds", ha="center", transform=ax.transAxes)
    ax.set_xlabel("seconds per path (fit + build + evaluate, log scale)")
    ax.set_ylabel(f"worst {points['split'].iloc[0] if len(points) else 'test'} accuracy (%)")
    ax.set_title(experiment)
    ax.grid(alpha=0.3)
    if drawn:
        fig.legend(loc="outside right upper", frameon=False)
    return save_figure(fig, out_stem)


def plot_ensembles(table: pd.DataFrame, best_label: str, out_stem: Path) -> list[Path]:
    """The paper's Fig. 7, one panel per experiment: test accuracy against the number of models in the
    ensemble, one line per method (`ensembles_table`'s rows), and the best single model as a dashed line."""
    return _ensemble_panels(table, best_label, "models", "number of models in the ensemble", out_stem)


def plot_ensemble_costs(table: pd.DataFrame, best_label: str, out_stem: Path) -> list[Path]:
    """Test accuracy against inference FLOPs per sample (× one model), one panel per experiment: what each
    extra point of accuracy costs with each method (each mark is labelled with its number of models)."""
    return _ensemble_panels(table, best_label, "flops_ratio", "inference FLOPs per sample (× one model)", out_stem)


def _ensemble_panels(table: pd.DataFrame, best_label: str, x: str, xlabel: str, out_stem: Path) -> list[Path]:
    plt = _pyplot()
    experiments = list(dict.fromkeys(table["experiment"]))
    fig, axes = plt.subplots(
        1, len(experiments), figsize=(1.0 + 4.2 * len(experiments), 3.8), squeeze=False, layout="constrained"
    )
    labels = list(dict.fromkeys(table.loc[table["label"] != best_label, "label"]))
    style = {label: (color, marker) for label, color, marker in zip(labels, colors(), ENSEMBLE_MARKERS)}
    for ax, experiment in zip(axes[0], experiments):
        rows = table[table["experiment"] == experiment]
        for label, line in rows[rows["label"] != best_label].groupby("label", sort=False):
            line = line.sort_values("models")
            color, marker = style[label]
            ax.plot(line[x], line["test_acc"], "-", marker=marker, color=color, label=label, markersize=5)
        if x != "models":
            _label_sizes(ax, rows[rows["label"] != best_label], x, style)
        for best in rows.loc[rows["label"] == best_label, "test_acc"]:
            ax.axhline(best, color="black", linestyle="--", linewidth=1, label=f"{best_label} (the mark to beat)")
        if x == "models":
            ax.set_xticks(sorted(rows["models"].unique()))
        ax.set_xlabel(xlabel)
        ax.set_title(experiment)
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel("test accuracy (%)")
    handles, names = legend_entries(axes.flat, [*labels, f"{best_label} (the mark to beat)"])
    fig.legend(handles, names, loc="outside lower center", ncols=min(len(names), 4), frameon=False)
    return save_figure(fig, out_stem)


def _label_sizes(ax, rows: pd.DataFrame, x: str, style: dict) -> None:
    """Write each mark's number of models beside it, once per place (every line starts at model 1).
    Marks at one x (WA(1) costs one model at every size) get their labels side by side, top mark first,
    each tied to its mark by a thin line, so that no label is printed over another."""
    taken: dict[float, int] = {}
    places = rows.sort_values("test_acc", ascending=False).drop_duplicates([x, "test_acc", "models"])
    for label, n, cost, acc in places[["label", "models", x, "test_acc"]].itertuples(index=False):
        slot = taken.get(round(cost, 6), 0)
        taken[round(cost, 6)] = slot + 1
        tie = {"arrowstyle": "-", "linewidth": 0.5, "color": style[label][0]} if slot else None
        ax.annotate(
            f"N={n}",
            (cost, acc),
            textcoords="offset points",
            xytext=(7 + 24 * slot, 0),
            va="center",
            fontsize=8,
            color=style[label][0],
            arrowprops=tie,
        )


def budget_epochs(rows: pd.DataFrame) -> list[int]:
    """The budgets (epochs) budget rows hold, ascending: the budget table's columns and the figure's ticks."""
    return sorted(int(epochs) for epochs in rows["epochs"].unique())


def plot_budget(rows: pd.DataFrame, levels: pd.DataFrame, out_stem: Path) -> list[Path]:
    """Worst test accuracy against the fitting budget (log axis, budget + ½ so that 0 epochs shows): one panel per
    network, one line per curve and pair in its method's colour (dotted where the curve's label says more than its
    method), and each pair's `levels` (network, pair, label, test) as a dashed line: a path that needs no fit."""
    plt = _pyplot()
    networks = list(dict.fromkeys(rows["network"]))
    fig, axes = plt.subplots(
        1, len(networks), figsize=(1.5 + 4.2 * len(networks), 3.8), squeeze=False, layout="constrained"
    )
    palette = colors()
    methods = list(dict.fromkeys([*rows["method"], *levels.get("label", [])]))
    color = {method: palette[k % len(palette)] for k, method in enumerate(methods)}
    epochs = budget_epochs(rows)
    labelled: set[str] = set()
    for ax, network in zip(axes[0], networks):
        for (method, curve, _), line in rows[rows["network"] == network].groupby(
            ["method", "curve", "pair"], sort=False
        ):
            line = line.sort_values("epochs")
            ax.plot(line["epochs"] + 0.5, 100 * line["test"], marker="o", markersize=4, color=color[method],
                    linestyle="-" if curve == method else ":", label=None if curve in labelled else curve)
            labelled.add(curve)
        for level in levels[levels["network"] == network].itertuples() if len(levels) else ():
            name = f"{level.label} (no fitting)"
            ax.axhline(100 * level.test, color=color[level.label], linestyle="--", linewidth=1,
                       label=None if name in labelled else name)
            labelled.add(name)
        ax.set_xscale("log")
        ax.set_xticks([e + 0.5 for e in epochs], [str(e) for e in epochs])
        ax.minorticks_off()
        ax.set_xlabel("fitting epochs")
        ax.set_ylabel("worst test accuracy (%)")
        ax.set_title(network)
        ax.grid(alpha=0.3)
    fig.legend(loc="outside right upper", frameon=False, fontsize=8)
    return save_figure(fig, out_stem)
