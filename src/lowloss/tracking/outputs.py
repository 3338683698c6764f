"""What a tracked run shows of the files its command wrote: curves, the report's tables, figures.

Read back from the outputs, so that every command is tracked the same way: training curves per epoch
from a weight file's sidecar `history`; loss and accuracy along the path from a path table, at steps
on the report figure's own x axis; every value of the report's `table*.csv` as a metric and its
`table*.md` as the run's description; a path table's figure. The curves hold accuracies as the files
do (fractions); `lowloss.tracking.runs` logs every accuracy and error in percent, as the report shows them.
"""

from __future__ import annotations

import argparse
import math
import re
from collections.abc import Iterator
from pathlib import Path

CURVE_KEYS = ("history", "curve")
"""Sidecar keys holding a training curve, a list of rows: per epoch (`history` of models and Garipov
curves) or per step (`curve` of connectors)."""
PATH_AXIS_STEPS = 1000
"""A path point at x on the report figure's axis (0 = Θ^A, 1 = Θ^B) is logged at step round(1000 x)."""
METRIC_UNSAFE = re.compile(r"[^\w./ :-]")  # what MLflow refuses in a metric name ("+" of ot+wa)


def output_files(args: argparse.Namespace, summary: dict) -> list[Path]:
    """The files a command wrote: `--out*` / `--save-path` arguments (sidecars included) and the summary's
    `files` list. A folder argument is walked only when the summary lists no files: a report folder is shared
    with other jobs, which may be writing into it meanwhile."""
    candidates = [
        value
        for key, value in vars(args).items()
        if value is not None and (key == "out" or key.startswith("out_") or key == "save_path")
    ]
    listed = summary.get("files", [])
    candidates += listed
    files: dict[Path, None] = {}
    for candidate in map(Path, candidates):
        if candidate.is_dir() and not listed:
            files.update(dict.fromkeys(sorted(p for p in candidate.rglob("*") if p.is_file())))
        elif candidate.is_file():
            files[candidate] = None
            sidecar = candidate.with_suffix(".json")
            if candidate.suffix == ".safetensors" and sidecar.is_file():
                files[sidecar] = None
    return list(files)


def series(path: Path) -> Iterator[tuple[str, float, int]]:
    """(key, value, step) of the curves in an output: a sidecar's training curve, or a path table."""
    if path.suffix == ".csv" and not is_table(path):
        yield from _path_series(path)
    elif path.suffix == ".safetensors":
        from lowloss.storage.weights import read_meta

        meta = read_meta(path)
        for key in CURVE_KEYS:
            if isinstance(meta.get(key), list):
                yield from _history_series(meta[key])


def _history_series(history: list) -> Iterator[tuple[str, float, int]]:
    """Training curves: `history/<field>` at step = epoch (or step, or row number)."""
    for index, row in enumerate(history):
        if not isinstance(row, dict):
            continue
        step = int(row.get("epoch", row.get("step", index + 1)))
        for key, value in row.items():
            if key not in ("epoch", "step") and isinstance(value, (int, float)) and math.isfinite(value):
                yield f"history/{key}", float(value), step


def _path_series(path: Path) -> Iterator[tuple[str, float, int]]:
    """`path/<split>_<acc|error|loss>` along the path, at step = 1000 × the report figure's x.

    That axis gives every leg (or stage of swap legs) an equal share, so a 21-point method and a
    300-leg `ot+wa` overlay in the MLflow UI. Where several points fall on one step (hundreds of swap
    legs), the one with the lowest accuracy is kept: the curve's minimum stays the path's worst point.
    """
    import numpy as np

    from lowloss.results.figures import stage_positions
    from lowloss.storage.path_table import is_path_table, read_path_table

    if not is_path_table(path):
        return
    table = read_path_table(path)
    x, _ = stage_positions(table)
    table = table.assign(step=np.rint(x * PATH_AXIS_STEPS).astype(int))
    for split, rows in table.groupby("split", sort=True):
        worst = rows.loc[rows.groupby("step")["acc"].idxmin()]
        for row in worst.itertuples():
            yield f"path/{split}_acc", float(row.acc), int(row.step)
            yield f"path/{split}_error", 1 - float(row.acc), int(row.step)
            if not np.isnan(row.loss):  # a screened swap leg has no loss (`connect --screen-swaps`)
                yield f"path/{split}_loss", float(row.loss), int(row.step)


def is_table(path: Path) -> bool:
    """A table of the report (`table1.csv`, `table2.csv`, …)."""
    from lowloss.storage.file_kinds import REPORT_TABLE_NAME

    return REPORT_TABLE_NAME.fullmatch(path.name) is not None


def table_metrics(path: Path) -> dict[str, float]:
    """Every value of a report table as `table/<experiment>/<method>/<split>_mean` (and `_std`), in percent
    as in the table.

    The table (`lowloss.results.tables.summary_table`) has one row per method, experiment and split with
    its `mean` and `std`; an empty std (a single pair) is left out. Characters MLflow refuses in a name
    become `_` (`ot+wa` -> `ot_wa`).
    """
    import pandas as pd

    table = pd.read_csv(path)
    metrics = {}
    for row in table.itertuples(index=False):
        stem = "/".join(METRIC_UNSAFE.sub("_", str(part)) for part in ("table", row.experiment, row.method, row.split))
        for stat in ("mean", "std"):
            value = getattr(row, stat)
            if pd.notna(value):
                metrics[f"{stem}_{stat}"] = float(value)
    return metrics


def tables_markdown(files: list[Path]) -> str:
    """The Markdown of every report table among `files` (`table1.md` …), for the run's description."""
    parts = []
    for path in sorted(p for p in files if p.suffix == ".md" and is_table(p.with_suffix(".csv"))):
        title = re.sub(r"table(\d+)", r"Table \1", path.stem)
        parts.append(
            f"**{title}**: worst accuracy along the path, % (mean ± std over pairs); metrics "
            f"`table/<experiment>/<method>/<split>_mean` and `_std` hold the values.\n\n"
            f"{path.read_text().strip()}\n"
        )
    return "\n".join(parts)


def path_figures(files: list[Path]) -> dict[str, object]:
    """A figure of each path table among `files`: accuracy along the path on the report's axes."""
    from lowloss.results.figures import plot_path
    from lowloss.storage.path_table import is_path_table, read_path_table

    figures = {}
    for path in files:
        if path.suffix == ".csv" and is_path_table(path):
            table = read_path_table(path)
            figures[f"{path.stem}.png"] = plot_path(
                table, str(table["method"].iloc[0]) if "method" in table else path.stem
            )
    return figures
