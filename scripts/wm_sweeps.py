"""Weight matching with a budget of sweeps on trained networks: what stopping early costs in the path's worst point.

For each pair of a finished run's trained models (`results/<experiment>/models/seed<k>.safetensors`, as `make run`
leaves them), matches Θ^B onto Θ^A by weight matching at its aligned start (`--wm-sweeps 0`), after one sweep and
at its fixed point (the default), and evaluates the straight leg from Θ^A to each matched Θ^B at `--points` points
(the leg whose worst point the matching decides; the permutation stage after it keeps the function). Prints a
Markdown table, and with `--out` writes it as `OUT/sweeps.md` for `docs_tables.py` to copy: objective, sweeps and
worst train/test accuracy per pair and budget; decide on the train column.

    python scripts/wm_sweeps.py results/digits-fc3 results/digits-onehidden --out results/report/digits-sweeps
    python scripts/docs_tables.py results/report/digits-sweeps
"""

from __future__ import annotations

import argparse
from pathlib import Path

from lowloss.evaluate import evaluate_path, worst_points
from lowloss.methods.context import MAX_SWEEPS
from lowloss.methods.weight_matching import aligned_start, objective, weight_matching
from lowloss.nets.network import Network
from lowloss.nets.spec import permute
from lowloss.paths.legs import Leg
from lowloss.paths.legs import Path as ConnectionPath
from lowloss.storage.atomic import write_text_atomic
from lowloss.storage.model_files import load_model
from lowloss.training.data import load_dataset

BUDGETS = (0, 1, None)
"""Sweeps after the aligned start: none, one, to the fixed point."""


def rows(run: Path, pair: tuple[int, int], data, points: int) -> list[str]:
    (model, artifact_a), (_, artifact_b) = (load_model(run / "models" / f"seed{seed}.safetensors") for seed in pair)
    network = Network(model)
    spec = network.spec.trained()
    theta_a, theta_b = artifact_a.tensors, artifact_b.tensors
    start = aligned_start(theta_a, theta_b, spec)
    found = []
    for budget in BUDGETS:
        perms, sweeps = (
            (start, 0) if budget == 0 else weight_matching(theta_a, theta_b, spec, 0, budget or MAX_SWEEPS, start)
        )
        matched = permute(theta_b, network.spec, perms)
        leg = ConnectionPath([Leg(theta_a, matched, "matched")], "weight-matching")
        table = evaluate_path(network, leg, data, points, progress=False)
        worst = worst_points(table)
        found.append(
            f"| {run.name} {pair[0]}-{pair[1]} | {'fixed point' if budget is None else budget} | {sweeps} | "
            f"{objective(theta_a, theta_b, spec, perms):.2f} | {100 * worst['train']['acc']:.2f} | "
            f"{100 * worst['test']['acc']:.2f} |"
        )
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="experiment folders of a finished run")
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--data-root", type=Path, default=Path("data"))
    parser.add_argument("--pairs", nargs="+", default=["0-1", "2-3"], help="seed pairs, e.g. 0-1")
    parser.add_argument("--points", type=int, default=21)
    parser.add_argument("--out", type=Path, help="report folder to write sweeps.md into")
    args = parser.parse_args()
    data = load_dataset(args.dataset, root=args.data_root)
    lines = ["| pair | budget (sweeps) | sweeps run | objective | worst train % | worst test % |", "| --- " * 6 + "|"]
    for run in args.runs:
        for pair in args.pairs:
            a, b = map(int, pair.split("-"))
            lines += rows(run, (a, b), data, args.points)
    table = "\n".join(lines) + "\n"
    print(table, end="")
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        write_text_atomic(args.out / "sweeps.md", table)


if __name__ == "__main__":
    main()
