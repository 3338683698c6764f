"""`ot+wa` end to end against the cold curve on one pair: what `connect`'s speed options buy, as a table for the docs.

Each row is one `lowloss` command in a process of its own, one after another on the same machine: the cold curve
(`fit-curve --method garipov-polychain-3 --epochs E`, then `connect --curve` at the same points per leg), and
`connect --method ot+wa` in full, with `--screen-swaps`, and with `--screen-swaps --points auto`. The seconds are
the commands' own (their summaries' `fit_seconds`, `build_seconds` (matching and route) and `evaluate_seconds`):
without the process's start-up and the data's loading, which every row pays alike.

    python scripts/end_to_end.py results/fitting-budget/fc3/fc3-0.safetensors \\
        results/fitting-budget/fc3/fc3-1.safetensors --dataset fashion-mnist --data-root /usr/share/datasets \\
        --points 11 --wa-samples 10000 --epochs 20 --out results/report/fashion-end-to-end
    python scripts/docs_tables.py results/report/fashion-end-to-end    # into docs/results/

Writes `OUT/end-to-end.md` (the table) and `OUT/end-to-end.csv` (every command's summary).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lowloss.storage.atomic import write_text_atomic  # noqa: E402

CURVE = "garipov-polychain-3"
ROUTES = {  # row label: connect's options beyond the method
    "`ot+wa`, every leg in full": (),
    "`ot+wa --screen-swaps`": ("--screen-swaps",),
    "`ot+wa --screen-swaps --points auto`": ("--screen-swaps", "--points", "auto"),
}


def lowloss(*args: str) -> dict:
    """Run one lowloss command; its summary (the JSON line it prints last)."""
    done = subprocess.run(
        [sys.executable, "-m", "lowloss", *args, "--no-progress"], capture_output=True, text=True, check=False
    )
    if done.returncode:
        why = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        raise SystemExit(f"lowloss {args[0]} failed: {why}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure(args: argparse.Namespace, work: Path) -> list[dict]:
    """Every row's command summaries, the cold curve first."""
    data = ("--dataset", args.dataset, "--data-root", args.data_root)
    ends = (str(args.a), str(args.b))
    curve = work / "curve.safetensors"
    fit = lowloss("fit-curve", *ends, *data, "--method", CURVE, "--epochs", str(args.epochs), "--out", str(curve))
    evaluated = lowloss(
        "connect", *ends, *data, "--method", CURVE, "--curve", str(curve), "--points", str(args.points),
        "--out", str(work / "curve.csv"),
    )  # fmt: skip
    rows = [{"path": f"{CURVE}, {args.epochs} epochs", **evaluated, "fit_seconds": fit["fit_seconds"]}]
    for label, options in ROUTES.items():
        points = () if "--points" in options else ("--points", str(args.points))
        summary = lowloss(
            "connect", *ends, *data, "--method", "ot+wa", "--wa-samples", str(args.wa_samples), *points, *options,
            "--out", str(work / "route.csv"),
        )  # fmt: skip
        rows.append({"path": label, **summary})
    return rows


def markdown(rows: pd.DataFrame) -> str:
    """The table: each row's fit or build, evaluation and total seconds, how many times cheaper than the cold curve,
    and its worst train and test accuracy."""
    total = rows["fit_seconds"] + rows["build_seconds"] + rows["evaluate_seconds"]
    cold = total.iloc[0]
    lines = [
        "| path | fit or build | evaluate | end to end | cheaper than the cold curve | worst train / test (%) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for (_, row), seconds in zip(rows.iterrows(), total):
        lines.append(
            f"| {row['path']} | {row['fit_seconds'] + row['build_seconds']:.1f} s | {row['evaluate_seconds']:.1f} s "
            f"| {seconds:.1f} s | {cold / seconds:.1f}× | {100 * row['worst_train_acc']:.2f} / "
            f"{100 * row['worst_test_acc']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("a", type=Path, help="endpoint Θ^A (.safetensors)")
    parser.add_argument("b", type=Path, help="endpoint Θ^B (.safetensors)")
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--data-root", default="data")
    parser.add_argument("--points", type=int, default=11, help="points per leg of every path (default 11)")
    parser.add_argument("--wa-samples", type=int, default=10000, help="ot+wa's least-squares samples (default 10000)")
    parser.add_argument("--epochs", type=int, default=20, help="the cold curve's epochs (default 20)")
    parser.add_argument("--out", type=Path, required=True, help="folder for end-to-end.md and end-to-end.csv")
    args = parser.parse_args()
    if args.out.exists() and not args.out.is_dir():  # refused before minutes of measuring, not after
        raise SystemExit(f"{args.out}: --out must be a folder, and this is a file")
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as work:
        rows = pd.DataFrame(measure(args, Path(work)))
    write_text_atomic(args.out / "end-to-end.csv", rows.to_csv(index=False))
    write_text_atomic(args.out / "end-to-end.md", markdown(rows))
    print((args.out / "end-to-end.md").read_text(), end="")


if __name__ == "__main__":
    main()
