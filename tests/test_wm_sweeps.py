"""scripts/wm_sweeps.py: weight matching at its aligned start, after one sweep and at its fixed point on a run's
trained pair, each with the worst point of the straight leg to the matched network."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from lowloss.training.config import TrainConfig
from lowloss.training.train import train_endpoint

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "wm_sweeps.py"


def test_each_budget_is_a_row_and_more_sweeps_never_lower_the_objective(digits, tmp_path):
    run = tmp_path / "digits-fc3"
    for seed in (0, 1):
        out = run / "models" / f"seed{seed}.safetensors"
        train_endpoint("fc3", {"widths": [12, 10]}, digits, TrainConfig(epochs=2, seed=seed), out, progress=False)
    out = tmp_path / "report"
    done = subprocess.run(
        [sys.executable, SCRIPT, run, "--pairs", "0-1", "--points", "3", "--out", out],
        capture_output=True,
        text=True,
        check=True,
    )
    assert (out / "sweeps.md").read_text() == done.stdout  # the printed table, for docs_tables.py to copy
    lines = done.stdout.strip().splitlines()
    assert lines[0].startswith("| pair | budget (sweeps) |") and len(lines) == 2 + 3
    cells = [line.strip("|").split("|") for line in lines[2:]]
    assert [cell[1].strip() for cell in cells] == ["0", "1", "fixed point"]
    assert [int(cell[2]) for cell in cells][:2] == [0, 1]
    objectives = [float(cell[3]) for cell in cells]
    assert objectives == sorted(objectives)
    assert all(0 <= float(cell[4]) <= 100 and 0 <= float(cell[5]) <= 100 for cell in cells)
