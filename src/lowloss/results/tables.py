"""The paper's Tables 1 and 2 and the figures, from the path tables of a run.

A path table (`lowloss connect --out`) has one row per (leg, t, split), and always holds both endpoints
(t = 0 of its first leg, t = 1 of its last). The report reads them where the workflow writes them,
`<results>/<experiment>/paths/<method>/<seed A>-<seed B>.csv`. A cell is the mean ± one standard
deviation over pairs of the worst accuracy along the path (paper §5.1), in percent. The End Points
row is the mean ± std over every endpoint of the evaluated pairs of its accuracy, read from the same
tables, so that it was computed on the same splits by the same evaluation as the paths.

Each table is written for machines (`table1.csv`: one row per method, experiment and split, the mean
and std as numbers), for people (`table1.md`, and `table1.html`, the page the HTML report shows) and
for a paper (`table1.tex`).

Experiments of one-hidden-layer networks make Table 1 (rows in the order the methods come); the
others make Table 2, rows in the paper's order.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from lowloss.storage.atomic import write_text_atomic
from lowloss.storage.path_table import SECONDS_COLUMNS, path_seconds, read_path_table, worst_row
from lowloss.methods.registry import ROUTE_METHODS
from lowloss.errors import LowlossError
from lowloss.results.budget import budget_rows, level_rows, write_budget
from lowloss.results.figures import END_POINTS, SPLITS, plot_costs, plot_paths, plot_routes
from lowloss.results.html import write_table_page
from lowloss.nets.architectures import ARCHITECTURES
from lowloss.nets.topology import ONE_HIDDEN

PATH_NAME = re.compile(r"(?P<a>\d+)-(?P<b>\d+)(\.fit(?P<fit>\d+)|\.epochs(?P<epochs>\d+))?\.csv")
"""`<seed A>-<seed B>.csv`; `<seed A>-<seed B>.fit<k>.csv` for the path through a learned method's k-th
connector fit (each fit is one more sample of the method's row); `<seed A>-<seed B>.epochs<E>.csv` for a curve
fitted for E epochs, a point of the budget table (`results.budget`), not of Tables 1 and 2."""
TABLE2_ORDER = ["linear", "arc", "linear+bfly", "arc+bfly", "linear+wa", "arc+wa", "ot+bfly", "ot+wa",
                "garipov-polychain-3"]
"""The rows of the paper's Table 2 (methods not in it follow in the order they come)."""
SUMMARY_KEYS = ["method", "experiment", "split"]
"""The key columns of `table1.csv` / `table2.csv`; `mean`, `std` (worst accuracy, %) and `n` follow."""
TABLE_TITLES = {"table1": "Table 1", "table2": "Table 2"}
TABLE_NOTE = ("Rows: connection methods and End Points; columns: experiment and split. Each value is the mean over "
              "the evaluation pairs of the lowest accuracy (%) along the path, ± its standard deviation; End Points "
              "is the endpoints' own accuracy. Click a heading to sort, type in Search to filter the rows.")
COST_COLUMNS = ("experiment", "method", "pair", *SECONDS_COLUMNS, "seconds", "split", "worst_acc", "pareto")
"""`cost.csv`: one row per path."""
WORST_POINT_HEADINGS = {"worst_acc": "worst accuracy (%)", "worst_loss": "loss there", "position": "position (leg + t)"}
WORST_POINTS_NOTE = ("Per experiment, method, pair and split: the lowest accuracy (%) along the path, the loss at "
                     "that point and where it lies (leg index + t); the End Points rows give each endpoint's own "
                     "accuracy (its seed in the pair column). Tables 1 and 2 are the mean and std of these rows over "
                     "pairs.")


@dataclass(frozen=True)
class PathRun:
    """One evaluated path: which experiment, method, architecture and pair of seeds (and connector fit), and
    its table."""

    experiment: str
    method: str
    arch: str
    seeds: tuple[int, int]
    table: pd.DataFrame
    fit: int | None = None
    epochs: int | None = None

    @property
    def pair(self) -> str:
        return f"{self.seeds[0]}-{self.seeds[1]}"

    @property
    def sample(self) -> str:
        """The pair, and the connector fit of a learned method's path or a budget path's epochs (`0-1`, `0-1.fit2`,
        `0-1.epochs5`)."""
        if self.fit is not None:
            return f"{self.pair}.fit{self.fit}"
        return self.pair if self.epochs is None else f"{self.pair}.epochs{self.epochs}"

    @property
    def one_hidden(self) -> bool:
        return self.arch in ARCHITECTURES and ARCHITECTURES[self.arch].topology == ONE_HIDDEN


def load_path_run(csv: str | os.PathLike) -> PathRun:
    """Read a path table (checked by `read_path_table`) and its experiment/method/pair from its place in
    the results tree."""
    csv = Path(csv)
    match = PATH_NAME.fullmatch(csv.name)
    if match is None or csv.parent.parent.name != "paths":
        raise LowlossError(f"{csv}: expected a path table at <experiment>/paths/<method>/<seedA>-<seedB>.csv "
                           f"(or <seedA>-<seedB>.fit<k>.csv for a learned method's k-th connector, "
                           f"<seedA>-<seedB>.epochs<E>.csv for a curve fitted for E epochs)")
    table = read_path_table(csv)
    if table["method"].iloc[0] != csv.parent.name:
        raise LowlossError(f"{csv}: holds a path of method {table['method'].iloc[0]!r}, but lies in the folder of "
                           f"{csv.parent.name!r}")
    fit, epochs = (None if match[key] is None else int(match[key]) for key in ("fit", "epochs"))
    return PathRun(experiment=csv.parent.parent.parent.name, method=csv.parent.name, arch=str(table["arch"].iloc[0]),
                   seeds=(int(match["a"]), int(match["b"])), table=table, fit=fit, epochs=epochs)


def load_path_runs(csvs: Sequence[str | os.PathLike]) -> list[PathRun]:
    """Every path table (`load_path_run`), each path once: a table given twice, or two tables of the same
    experiment, method, pair and fit, are refused naming both."""
    runs, seen = [], {}
    for csv in csvs:
        run = load_path_run(csv)
        key = (run.experiment, run.method, run.sample)
        if key in seen:
            raise LowlossError(f"{csv}: the path of {run.method} between {run.sample} in {run.experiment} again "
                               f"(already read from {seen[key]}); give every path table once")
        seen[key] = csv
        runs.append(run)
    return runs


def endpoint_accuracies(runs: Sequence[PathRun]) -> dict[tuple[str, int], dict[str, float]]:
    """Per (experiment, seed), the endpoint's accuracy (a fraction) per split: the first position of the
    tables where it is Θ^A and the last where it is Θ^B (their mean, should strategies round differently)."""
    values: dict[tuple[str, int, str], list[float]] = {}
    for run in runs:
        for split, rows in run.table.groupby("split"):
            ordered = rows.sort_values("position", kind="stable")["acc"]
            for seed, acc in zip(run.seeds, (ordered.iloc[0], ordered.iloc[-1])):
                values.setdefault((run.experiment, seed, split), []).append(float(acc))
    out: dict[tuple[str, int], dict[str, float]] = {}
    for (experiment, seed, split), accs in values.items():
        out.setdefault((experiment, seed), {})[split] = float(np.mean(accs))
    return out


def worst_points(runs: Sequence[PathRun], endpoints: dict[tuple[str, int], dict[str, float]]) -> pd.DataFrame:
    """Tidy table: per experiment, method, pair and split the worst accuracy (%) along the path, its loss
    and position; plus the End Points rows, one per endpoint (its seed in `pair`)."""
    rows = []
    for run in runs:
        for split, points in run.table.groupby("split"):
            worst = worst_row(points)
            rows.append(dict(experiment=run.experiment, method=run.method, pair=run.sample, split=split,
                             worst_acc=100 * float(worst["acc"]), worst_loss=float(worst["loss"]),
                             position=float(worst["position"])))
    for (experiment, seed), accuracy in sorted(endpoints.items()):
        for split in SPLITS:
            rows.append(dict(experiment=experiment, method=END_POINTS, pair=str(seed), split=split,
                             worst_acc=100 * accuracy[split], worst_loss=np.nan, position=np.nan))
    return pd.DataFrame(rows)


def summary_table(worst: pd.DataFrame, methods: Sequence[str], experiments: Sequence[str]) -> pd.DataFrame:
    """The machine form of a table: one row per method (End Points last), experiment and split with the
    mean and standard deviation over pairs of the worst accuracy (%) and `n`, the number of samples they are
    taken over: pairs (for a learned method, every pair's connector fits, each fit one sample of the row; for
    End Points, endpoints). A single sample has no std (empty)."""
    stats = worst.groupby(["method", "experiment", "split"], sort=False)["worst_acc"].agg(["mean", "std", "count"])
    index = pd.MultiIndex.from_product([[*methods, END_POINTS], experiments, SPLITS], names=SUMMARY_KEYS)
    stats = stats.reindex(index).dropna(subset=["mean"]).rename(columns={"count": "n"})
    return stats.astype({"n": int}).reset_index()


def paper_table(summary: pd.DataFrame) -> pd.DataFrame:
    """The paper's layout for people: rows = methods + End Points, columns = (experiment, split), cells
    `mean ± std` (text)."""
    cells = summary.assign(cell=[format_cell(*row) for row in summary[["mean", "std", "n"]].itertuples(index=False)])
    table = cells.pivot(index="method", columns=["experiment", "split"], values="cell")
    # As in the paper: experiments over train/test, "Methods" heading the row labels.
    columns = pd.MultiIndex.from_tuples(dict.fromkeys(zip(summary["experiment"], summary["split"])),
                                        names=[None, "Methods"])
    table = table.reindex(index=list(dict.fromkeys(summary["method"])), columns=columns).fillna("")
    table.index.name = None
    return table


def reading_table(summary: pd.DataFrame) -> pd.DataFrame:
    """The layout of the report's page: the paper's rows and columns, each split's mean (%) beside its ±,
    both numbers, so that a column sorts by value."""
    parts = []
    for (experiment, split), rows in summary.groupby(["experiment", "split"], sort=False):
        values = rows.set_index("method")[["mean", "std"]]
        values.columns = pd.MultiIndex.from_tuples([(experiment, split), (experiment, "±")])
        parts.append(values)
    table = pd.concat(parts, axis=1).reindex(list(dict.fromkeys(summary["method"])))
    table.index.name = "method"
    return table


def format_cell(mean: float, std: float, count: int) -> str:
    """`97.86 ± 0.05`; a single value has no spread to show."""
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


def table_files(name: str) -> list[str]:
    """What one table is written as: CSV for machines, Markdown and HTML for people, LaTeX for a paper."""
    return [f"{name}.csv", f"{name}.md", f"{name}.html", f"{name}.tex"]


def write_table(out_dir: Path, name: str, summary: pd.DataFrame) -> list[Path]:
    """`summary_table`'s rows as `<name>.csv`; the paper's layout as Markdown, as the report's page and as
    LaTeX."""
    files = [out_dir / file for file in table_files(name)]
    paper = paper_table(summary)
    write_text_atomic(files[0], summary.to_csv(index=False))
    write_text_atomic(files[1], to_markdown(paper))
    write_table_page(files[2], reading_table(summary), f"{TABLE_TITLES[name]}: worst accuracy (%) along the path",
                     TABLE_NOTE)
    write_text_atomic(files[3], to_latex(paper))
    return files


def figure_stem(figure: str, experiment: str) -> str:
    """`paths-<experiment>`: the file name, less its suffix, of one experiment's figure."""
    return f"{figure}-{experiment}"


def write_worst_points(out_dir: Path, worst: pd.DataFrame) -> list[Path]:
    """The tidy worst points as CSV, and as the report's page with its columns named for people."""
    files = [out_dir / "worst_points.csv", out_dir / "worst_points.html"]
    write_text_atomic(files[0], worst.to_csv(index=False))
    write_table_page(files[1], worst.rename(columns=WORST_POINT_HEADINGS), "The worst point of every path",
                     WORST_POINTS_NOTE)
    return files


def cost_points(runs: Sequence[PathRun]) -> pd.DataFrame:
    """Per experiment, method and pair: the path's seconds (`SECONDS_COLUMNS` and their total, what the files it
    read record of their fits, building it and evaluating it), its worst test accuracy (%; train where there is no
    test split) and whether it is on the experiment's Pareto front. Paths whose tables record no seconds (written
    before they were recorded) are left out."""
    rows = []
    for run in runs:
        seconds = path_seconds(run.table)
        if seconds is None:
            continue
        split = "test" if (run.table["split"] == "test").any() else "train"
        worst = worst_row(run.table[run.table["split"] == split])
        rows.append(dict(experiment=run.experiment, method=run.method, pair=run.sample, **seconds,
                         seconds=sum(seconds.values()), split=split, worst_acc=100 * float(worst["acc"])))
    points = pd.DataFrame(rows, columns=COST_COLUMNS[:-1])
    return points.assign(pareto=on_pareto_front(points))


def on_pareto_front(points: pd.DataFrame) -> pd.Series:
    """Whether each path is on its experiment's Pareto front: no other path costs fewer seconds for a higher
    worst accuracy (of equal accuracies, the cheaper one)."""
    front = pd.Series(False, index=points.index, dtype=bool)
    for _, rows in points.groupby("experiment"):
        best = -np.inf
        for index, acc in rows.sort_values(["seconds", "worst_acc"], ascending=[True, False])["worst_acc"].items():
            if acc > best:
                front[index], best = True, acc
    return front


def write_costs(out_dir: Path, points: pd.DataFrame, methods: Sequence[str], experiments: Sequence[str]) -> list[Path]:
    """The cost of every path as `cost.csv` and, per experiment, the chart of worst accuracy against seconds."""
    files = [out_dir / "cost.csv"]
    write_text_atomic(files[0], points.to_csv(index=False))
    for experiment in experiments:
        chosen = points[points["experiment"] == experiment]
        files += plot_costs(chosen, methods, experiment, out_dir / figure_stem("cost", experiment))
    return files


def build_report(csvs: Sequence[str | os.PathLike], out_dir: str | os.PathLike) -> dict:
    """Read every path table; write Table 1 (one-hidden experiments) and Table 2 (the others) as CSV,
    Markdown, HTML and LaTeX, the tidy worst points (CSV, HTML), every path's cost (CSV) and each experiment's
    chart of accuracy against cost, every experiment's path figure, and for deep experiments their route figure;
    with budget paths (curves fitted for several numbers of epochs), the budget table and figure (`results.budget`).

    Columns keep the order of experiments in `csvs`; Table 1's rows the order in which methods first
    appear, Table 2's the paper's. Returns the command's summary: counts and the files written.
    """
    if not csvs:
        raise LowlossError("no path tables given")
    out_dir = Path(out_dir)
    every_run = load_path_runs(csvs)
    runs = [run for run in every_run if run.epochs is None]
    budget = [run for run in every_run if run.epochs is not None]
    if not runs:
        raise LowlossError(f"{csvs[0]}: only budget paths (<pair>.epochs<E>.csv) given; the report needs the "
                           f"paths of Tables 1 and 2 too")
    endpoints = endpoint_accuracies(runs)
    methods = list(dict.fromkeys(run.method for run in runs))
    experiments = list(dict.fromkeys(run.experiment for run in runs))
    worst = worst_points(runs, endpoints)
    files: list[Path] = []
    for name, chosen in (("table1", [run for run in runs if run.one_hidden]),
                         ("table2", [run for run in runs if not run.one_hidden])):
        if chosen:
            rows = list(dict.fromkeys(run.method for run in chosen))
            if name == "table2":
                rows = sorted(rows, key=lambda m: TABLE2_ORDER.index(m) if m in TABLE2_ORDER else len(TABLE2_ORDER))
            columns = list(dict.fromkeys(run.experiment for run in chosen))
            files += write_table(out_dir, name, summary_table(worst, rows, columns))
    files += write_worst_points(out_dir, worst)
    files += write_costs(out_dir, cost_points(runs), methods, experiments)
    for experiment in experiments:  # one figure per experiment, so that the report shows all of it at once
        files += plot_paths(runs, endpoints, methods, experiment, out_dir / figure_stem("paths", experiment))
    deep = [run for run in runs if not run.one_hidden and run.method in ROUTE_METHODS]
    route_methods = [m for m in TABLE2_ORDER if any(run.method == m for run in deep)]
    for experiment in dict.fromkeys(run.experiment for run in deep):
        files += plot_routes(deep, route_methods, experiment, out_dir / figure_stem("route", experiment))
    if budget:
        files += write_budget(out_dir, budget_rows(budget), level_rows(runs))
    return {"out_dir": str(out_dir), "experiments": len(experiments), "methods": len(methods),
            "paths": len(runs), "budget_paths": len(budget), "files": [str(f) for f in files]}
