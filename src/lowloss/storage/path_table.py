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
"""The columns of a path table file, in order."""
POINT_COLUMNS = tuple(column for column in COLUMNS if column != "arch")
"""What the evaluator records of every point; `arch`, the networks the path connects, is added on writing."""


def path_table_frame(table: pd.DataFrame, arch: str) -> pd.DataFrame:
    """An evaluated table (`POINT_COLUMNS`) as the path table of networks of `arch` (`COLUMNS`)."""
    missing = set(POINT_COLUMNS) - set(table.columns)
    if missing:
        raise ValueError(f"an evaluated path lacks columns {sorted(missing)}")
    return table.assign(arch=arch)[list(COLUMNS)]


def write_path_table(path: str | os.PathLike, table: pd.DataFrame, arch: str) -> None:
    """Write an evaluated table (`POINT_COLUMNS`) as a path table of networks of `arch`, atomically."""
    write_text_atomic(path, path_table_frame(table, arch).to_csv(index=False))


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
