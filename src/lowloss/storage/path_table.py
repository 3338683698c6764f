"""The path table: one row per evaluated point of a path and split, with its loss and accuracy.

`lowloss connect` writes it, the report, the tracking and the identification of files read it; its
columns, writer, reader and checks live here only. A table holds both endpoints (t = 0 of its first leg,
t = 1 of its last); `position` is leg index + t, so leg k spans [k, k + 1] (the paper's Fig. 5); `stage`
is the route stage of the leg (0 for methods without a route); `acc` is a fraction.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from lowloss.errors import LowlossError
from lowloss.storage.atomic import require_file, write_text_atomic

COLUMNS = ("method", "arch", "leg", "leg_name", "stage", "t", "position", "split", "loss", "acc")
"""The columns every path table file has, in order."""
POINT_COLUMNS = tuple(column for column in COLUMNS if column != "arch")
"""What the evaluator records of every point; `arch`, the networks the path connects, is added on writing."""
SECONDS_COLUMNS = ("fit_seconds", "build_seconds", "evaluate_seconds")
"""The path's cost, the same on every row, after `COLUMNS` (tables written before they were recorded lack them):
the seconds recorded in the fitted files the method read (a matching, a curve, a connector; each file's own
count includes the files it was made from), of building the path, and of evaluating it."""


def path_table_frame(table: pd.DataFrame, arch: str, seconds: dict[str, float] | None = None) -> pd.DataFrame:
    """An evaluated table (`POINT_COLUMNS`) as the path table of networks of `arch` (`COLUMNS`), with the path's
    `seconds` (keys `SECONDS_COLUMNS`) when given."""
    missing = set(POINT_COLUMNS) - set(table.columns)
    if missing:
        raise ValueError(f"an evaluated path lacks columns {sorted(missing)}")
    if seconds is not None and set(seconds) != set(SECONDS_COLUMNS):
        raise ValueError(f"a path's seconds are {list(SECONDS_COLUMNS)}, got {sorted(seconds)}")
    framed = table.assign(arch=arch)[list(COLUMNS)]
    if seconds is not None:
        framed = framed.assign(**{column: seconds[column] for column in SECONDS_COLUMNS})
    return framed


def write_path_table(
    path: str | os.PathLike, table: pd.DataFrame, arch: str, seconds: dict[str, float] | None = None
) -> None:
    """Write an evaluated table (`POINT_COLUMNS`) as a path table of networks of `arch`, atomically, with the
    path's `seconds` when given (`path_table_frame`)."""
    write_text_atomic(path, path_table_frame(table, arch, seconds).to_csv(index=False))


def path_seconds(table: pd.DataFrame) -> dict[str, float] | None:
    """A read path table's cost (`SECONDS_COLUMNS`), or None for a table written before costs were recorded."""
    if not set(SECONDS_COLUMNS) <= set(table.columns):
        return None
    return {column: float(table[column].iloc[0]) for column in SECONDS_COLUMNS}


def worst_row(rows: pd.DataFrame) -> pd.Series:
    """The row of lowest accuracy (the paper's worst point); of rows of equal accuracy, the one of highest loss."""
    return rows.sort_values(["acc", "loss"], ascending=[True, False], kind="stable").iloc[0]


def is_path_table(path: str | os.PathLike) -> bool:
    """Whether `path` starts with a path table's header (nothing else is read)."""
    try:
        with open(path) as handle:
            header = set(handle.readline().strip().split(","))
    except (OSError, UnicodeDecodeError):
        return False
    return set(COLUMNS) <= header


def read_path_table(path: str | os.PathLike) -> pd.DataFrame:
    """Read and check a path table: one error naming the file (and the line) for an empty or unreadable
    file, missing columns, an accuracy outside [0, 1] (NaN included) or a loss that is not a number."""
    path = Path(path)
    require_file(path)
    try:
        table = pd.read_csv(path)
    except pd.errors.EmptyDataError:
        raise LowlossError(f"{path}: empty file, not a path table (rerun the job that writes it)") from None
    except (pd.errors.ParserError, UnicodeDecodeError, OSError) as exc:
        raise LowlossError(f"{path}: not a readable CSV ({' '.join(str(exc).split())})") from None
    missing = set(COLUMNS) - set(table.columns)
    if missing or table.empty:
        raise LowlossError(f"{path}: not a path table (missing columns {sorted(missing)} or no rows)")
    acc, loss = (pd.to_numeric(table[column], errors="coerce") for column in ("acc", "loss"))
    bad = np.flatnonzero((~acc.between(0, 1) | loss.isna()).to_numpy())  # NaN is never between
    if len(bad):
        row = int(bad[0])  # named by its line in the file, where the header is line 1
        raise LowlossError(
            f"{path}: line {row + 2}: acc {table['acc'].iloc[row]}, loss {table['loss'].iloc[row]}: "
            f"accuracy must be a fraction in [0, 1] and loss a number"
        )
    return table
