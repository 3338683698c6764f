"""Compute the OT matching of B's hidden units to A's once, for `connect --method ot|ot+wa --matching`."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from lowloss.commands.connect import load_endpoints
from lowloss.defaults import OT_SOLVERS as SOLVERS

NAME = "match"
HELP = "OT-match the hidden units of two endpoints and save the permutation"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("endpoint_a", type=Path, help="Θ^A: a trained model (.safetensors)")
    parser.add_argument("endpoint_b", type=Path, help="Θ^B: a trained model of the same architecture")
    parser.add_argument("--out", type=Path, required=True, help="output matching (.safetensors + .json)")
    parser.add_argument("--ot-solver", choices=SOLVERS, default="emd", help="OT solver (default emd, as the paper)")


def run(args: argparse.Namespace) -> dict:
    import torch

    from lowloss.connect.matching import find_matching, save_matching

    started = time.perf_counter()
    model, artifact_a, artifact_b = load_endpoints(args.endpoint_a, args.endpoint_b)
    perms = find_matching(artifact_a.tensors, artifact_b.tensors, model.spec(), args.ot_solver)
    save_matching(args.out, perms, (artifact_a, artifact_b), args.ot_solver)
    moved = {group: int((perm != torch.arange(len(perm))).sum()) for group, perm in perms.items()}
    return {"out": str(args.out), "solver": args.ot_solver, "units_moved": moved,
            "seconds": round(time.perf_counter() - started, 3)}
