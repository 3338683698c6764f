"""The path table: one row per evaluated point of a path and split, with its loss and accuracy.

`lowloss connect` writes it, the report, the tracking and the identification of files read it; its
columns, writer, reader and checks live here only. A table holds both endpoints (t = 0 of its first leg,
t = 1 of its last) on both splits (`--points auto`'s test-split search adds points of the test split only);
`position` is leg index + t, so leg k spans [k, k + 1] (the paper's Fig. 5); `stage` is the route stage of the
leg (0 for methods without a route); `acc` is a fraction. pandas is imported when a table is read or written,
so naming a file's kind stays quick.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from lowloss.errors import LowlossError
from lowloss.nets.architectures import ARCHITECTURES
from lowloss.paths import SWAP_LEG_PREFIX
from lowloss.storage.atomic import require_file, write_text_atomic

if TYPE_CHECKING:
    import pandas as pd

COLUMNS = ("method", "arch", "leg", "leg_name", "stage", "t", "position", "split", "loss", "acc")
"""The columns every path table file has, in order."""
POINT_COLUMNS = tuple(column for column in COLUMNS if column != "arch")
"""What the evaluator records of every point; `arch`, the networks the path connects, is added on writing."""
SPLITS = ("train", "test")
"""The splits every point is evaluated on."""
POSITION_TOLERANCE = 1e-6
"""How far `position` may be from leg + t (both are written from the same float64 values)."""


@dataclass(frozen=True)
class Column:
    """What a column holds: text (from `choices` when given), or a finite number in [minimum, maximum]
    (an integer when `integer`)."""

    text: bool = False
    choices: tuple[str, ...] = ()
    integer: bool = False
    minimum: float | None = None
    maximum: float | None = None

    def values(self, column: pd.Series) -> tuple[pd.Series, pd.Series]:
        """(the values as the table keeps them, which of them break the rule)."""
        import numpy as np
        import pandas as pd

        if self.text:
            bad = ~column.map(lambda value: isinstance(value, str) and bool(value.strip()))
            return column, bad | (~column.isin(self.choices) if self.choices else False)
        numbers = pd.to_numeric(column, errors="coerce").astype(float)
        bad = ~np.isfinite(numbers)
        if self.integer:
            bad |= numbers != numbers.round()
        if self.minimum is not None:
            bad |= numbers < self.minimum
        if self.maximum is not None:
            bad |= numbers > self.maximum
        return (numbers.astype("int64") if self.integer and not bad.any() else numbers), bad

    def rule(self) -> str:
        if self.text:
            return f"must be one of {', '.join(self.choices)}" if self.choices else "must be a name"
        kind = "an integer" if self.integer else "a finite number"
        if self.maximum is not None:
            return f"must be {kind} in [{self.minimum:g}, {self.maximum:g}]"
        return f"must be {kind} of at least {self.minimum:g}" if self.minimum is not None else f"must be {kind}"


SCHEMA = {
    "method": Column(text=True),
    "arch": Column(text=True),
    "leg": Column(integer=True, minimum=0),
    "leg_name": Column(text=True),
    "stage": Column(integer=True, minimum=0),
    "t": Column(minimum=0, maximum=1),
    "position": Column(minimum=0),
    "split": Column(text=True, choices=SPLITS),
    "loss": Column(minimum=0),
    "acc": Column(minimum=0, maximum=1),
}
"""Every column's values; `read_path_table` checks them, then the rules that join columns and rows."""
SECONDS_COLUMNS = ("fit_seconds", "build_seconds", "evaluate_seconds")
"""The path's cost, the same on every row, after `COLUMNS` (tables written before they were recorded lack them):
the seconds recorded in the fitted files the method read (a matching, a curve, a connector; each file's own
count includes the files it was made from), of building the path, and of evaluating it."""
OPTIONAL_SCHEMA = dict.fromkeys(SECONDS_COLUMNS, Column(minimum=0))
"""The optional columns' values, checked when a table has them."""


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


def screened(table: pd.DataFrame) -> pd.Series:
    """Which rows are of screened swap legs (`connect --screen-swaps`): a swap leg's row without a loss (empty, NaN);
    its accuracy is exact, and it is not its stage's lowest, so it is never a worst point."""
    return table["loss"].isna() & table["leg_name"].astype(str).str.startswith(SWAP_LEG_PREFIX)


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
    """Read a path table and check it by `SCHEMA` and the rules between its rows: one error naming the file,
    the line (the header is line 1) or column, and the problem."""
    import pandas as pd

    path = Path(path)
    require_file(path)
    try:
        table = pd.read_csv(path, dtype={column: str for column in COLUMNS if SCHEMA[column].text})
    except pd.errors.EmptyDataError:
        raise LowlossError(f"{path}: empty file, not a path table (rerun the job that writes it)") from None
    except (pd.errors.ParserError, UnicodeDecodeError, OSError, ValueError) as exc:
        raise LowlossError(f"{path}: not a readable CSV ({' '.join(str(exc).split())})") from None
    missing = [column for column in COLUMNS if column not in table.columns]
    if missing or table.empty:
        raise LowlossError(f"{path}: not a path table (missing columns {missing} or no rows)")
    optional = [(name, column) for name, column in OPTIONAL_SCHEMA.items() if name in table.columns]
    for name, column in [*SCHEMA.items(), *optional]:
        values, bad = column.values(table[name])
        if name == "loss":
            bad &= ~screened(table)
        rows = bad.to_numpy().nonzero()[0]
        if len(rows):
            row = int(rows[0])
            raise LowlossError(f"{path}: line {row + 2}: {name} {table[name].iloc[row]}: {column.rule()}")
        table[name] = values
    _check_rows(path, table)
    return table


def _check_rows(path: Path, table: pd.DataFrame) -> None:
    """One method and architecture, both splits, one row per point and split, position = leg + t."""
    for column in ("method", "arch"):
        values = list(dict.fromkeys(table[column]))
        if len(values) > 1:
            raise LowlossError(f"{path}: column {column} holds {values}; a path table is one path")
    arch = table["arch"].iloc[0]
    if arch not in ARCHITECTURES and ":" not in arch:
        raise LowlossError(
            f"{path}: arch {arch!r} is neither a known architecture ({', '.join(ARCHITECTURES)}) nor a model reference"
        )
    absent = [split for split in SPLITS if split not in set(table["split"])]
    if absent:
        raise LowlossError(f"{path}: no rows of split {absent[0]!r}; a path table has rows of both splits {SPLITS}")
    repeated = table.duplicated(["leg", "t", "split"]).to_numpy().nonzero()[0]
    if len(repeated):
        row = int(repeated[0])
        raise LowlossError(
            f"{path}: line {row + 2}: leg {table['leg'].iloc[row]}, t {table['t'].iloc[row]}, split "
            f"{table['split'].iloc[row]} appears twice"
        )
    off = ((table["position"] - table["leg"] - table["t"]).abs() > POSITION_TOLERANCE).to_numpy().nonzero()[0]
    if len(off):
        row = int(off[0])
        raise LowlossError(
            f"{path}: line {row + 2}: position {table['position'].iloc[row]} is not leg + t "
            f"({table['leg'].iloc[row]} + {table['t'].iloc[row]})"
        )
