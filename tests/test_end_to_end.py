"""scripts/end_to_end.py: the cold curve and `ot+wa` three ways, each a `lowloss` command of its own, timed from
the commands' summaries into one table."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "end_to_end.py"


def test_the_table_has_the_cold_curve_and_the_route_three_ways(tmp_path, digits_endpoints):
    ends = [digits_endpoints(16, seed, 1) for seed in (0, 1)]
    out = tmp_path / "report"
    args = ["--epochs", "1", "--points", "11", "--wa-samples", "200", "--out", out]
    done = subprocess.run([sys.executable, SCRIPT, *ends, *map(str, args)], capture_output=True, text=True, check=True)
    table = (out / "end-to-end.md").read_text()
    assert table in done.stdout
    lines = table.splitlines()
    assert lines[2].startswith("| garipov-polychain-3, 1 epochs |") and "| 1.0× |" in lines[2]
    assert [line.split(" | ")[0] for line in lines[3:]] == [
        "| `ot+wa`, every leg in full",
        "| `ot+wa --screen-swaps`",
        "| `ot+wa --screen-swaps --points auto`",
    ]
    rows = pd.read_csv(out / "end-to-end.csv")
    assert rows["fit_seconds"].iloc[0] > 0 and (rows["fit_seconds"].iloc[1:] == 0).all()
    assert (rows[["build_seconds", "evaluate_seconds"]].iloc[1:] > 0).all().all()
    assert rows["points"].iloc[3] < rows["points"].iloc[1]  # the adaptive search spends fewer points
