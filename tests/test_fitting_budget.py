"""scripts/fitting_budget.py: every curve at every budget and the route measured once per pair, resumed without
measuring again, and rendered as the budget table, the cost table and the figure."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "fitting_budget.py"
TINY = ["--dataset", "digits", "--arch", "onehidden", "--options", '{"width": 8}', "--epochs", "1", "--pairs", "1"]


def script(*args: str | Path) -> str:
    done = subprocess.run([sys.executable, SCRIPT, *map(str, args)], capture_output=True, text=True, check=True)
    return done.stdout


def test_budget_rows_resume_and_render(tmp_path):
    work = tmp_path / "onehidden"
    script(*TINY, "--points", "3", "--wa-samples", "200", "--work", work)
    rows = pd.read_csv(work / "rows.csv")
    curves = rows[rows["method"] != "ot+wa"]
    assert sorted(set(curves["method"])) == ["aligned-polychain-3", "garipov-polychain-3", "ot+wa+polychain-3"]
    assert list(curves.groupby("method")["epochs"].apply(list).iloc[0]) == [0, 1, 2, 5, 10, 20]
    assert (rows["method"] == "ot+wa").sum() == 1 and rows[["train", "test"]].le(1).all().all()
    assert (curves.query("epochs == 0")["fit_s"] < curves.query("epochs == 20")["fit_s"].values).all()
    assert (curves["lr"] == 0.01).all()

    script(*TINY, "--points", "3", "--wa-samples", "200", "--work", work)  # everything measured: nothing added
    assert len(pd.read_csv(work / "rows.csv")) == len(rows)

    out = tmp_path / "report"
    printed = script("--render", out, work)
    budget, cost = (out / "budget.md").read_text(), (out / "cost.md").read_text()
    assert budget.splitlines()[0] == "| network, curve | 0 | 1 | 2 | 5 | 10 | 20 epochs |"
    assert len(budget.splitlines()) == 2 + 3 and budget in printed
    assert "onehidden 8, 0-1" in cost and "×" in cost
    assert (out / "budget.png").stat().st_size > 0 and (out / "budget.csv").exists()
    assert "Worst accuracy against fitting budget" in (out / "budget.html").read_text()

    # a curve fitted from another learning rate: its own rows, labelled in the table
    script(*TINY, "--points", "3", "--wa-samples", "200", "--work", work, "--curves", "aligned-polychain-3",
           "--aligned-lr", "0.001")  # fmt: skip
    added = pd.read_csv(work / "rows.csv").iloc[len(rows) :]
    assert len(added) == 6 and set(added["method"]) == {"aligned-polychain-3"} and (added["lr"] == 0.001).all()
    script("--render", out, work)
    lines = (out / "budget.md").read_text().splitlines()
    assert len(lines) == 2 + 4 and lines[3].startswith("| onehidden 8 (1 pairs), aligned-polychain-3 |")
    assert lines[4].startswith("| onehidden 8 (1 pairs), aligned-polychain-3, lr 0.001 |")


def test_rendering_a_folder_without_rows_is_refused_in_one_line(tmp_path):
    done = subprocess.run(
        [sys.executable, SCRIPT, "--render", tmp_path / "report", tmp_path / "nothing"], capture_output=True, text=True
    )
    assert done.returncode == 1 and done.stderr.strip().splitlines() == [
        f"{tmp_path / 'nothing'}: no rows.csv to render (measure first)"
    ]
    assert not (tmp_path / "report").exists()
