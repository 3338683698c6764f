"""How far two runs' tables differ: the measurement behind the spread across machines the README states.

Two runs of one config on different machines (or under different instruction sets of one machine, which is
what makes two x86 machines round differently: `ATEN_CPU_CAPABILITY`, `MKL_ENABLE_INSTRUCTIONS` and
`ONEDNN_MAX_CPU_ISA` pick torch's, MKL's and oneDNN's kernels) give two report folders. This joins their
`table1.csv` and `table2.csv` on method, experiment and split and prints, per row, both means and their
difference in percentage points, largest first, as a Markdown table:

    python scripts/compare_reports.py results/report/default ../other/results/report/default
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

TABLES = ("table1.csv", "table2.csv")
KEYS = ["method", "experiment", "split"]


def rows(report: Path) -> pd.DataFrame:
    """Every row of the report's path tables (method, experiment, split, mean, std, n)."""
    found = [pd.read_csv(report / name) for name in TABLES if (report / name).is_file()]
    if not found:
        raise SystemExit(f"{report}: no report tables ({', '.join(TABLES)})")
    return pd.concat(found, ignore_index=True)


def differences(first: Path, second: Path) -> pd.DataFrame:
    """Both runs' means per row and their absolute difference, largest first; rows of one run only are kept, their
    difference empty."""
    joined = rows(first).merge(rows(second), on=KEYS, how="outer", suffixes=(" A", " B"))
    joined["difference"] = (joined["mean A"] - joined["mean B"]).abs()
    columns = [*KEYS, "mean A", "mean B", "difference"]
    return joined[columns].sort_values("difference", ascending=False, na_position="last", kind="stable")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("first", type=Path, help="report folder of run A")
    parser.add_argument("second", type=Path, help="report folder of run B")
    args = parser.parse_args(argv)
    table = differences(args.first, args.second)
    print(table.to_markdown(index=False, floatfmt=".2f"))
    same = int((table["difference"] == 0).sum())
    print(f"\n{same} of {len(table)} rows identical; largest difference {table['difference'].max():.2f} points")
    return 0


if __name__ == "__main__":
    sys.exit(main())
