"""Compute the unit matching a method uses once per pair, for `connect --method M --matching FILE`."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from lowloss.cli.options import (
    BN_BATCHES_HELP,
    MAX_BATCH,
    MAX_BATCHES,
    add_dataset_options,
    add_device_option,
    add_seed_option,
    count,
    dataset_from_args,
    given,
    method_name,
    output_path,
)
from lowloss.errors import LowlossError
from lowloss.methods.context import OT_SOLVERS
from lowloss.methods.registry import ROUTE_METHODS, get_method
from lowloss.storage.destinations import check_files, weights_output
from lowloss.storage.file_kinds import MATCHING, MODEL

NAME = "match"
HELP = (
    "match the units of two endpoints as a method does (ot, ot+wa, ot+bfly, weight-matching) and save the permutations"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("endpoint_a", type=Path, help="Θ^A: a trained model (.safetensors)")
    parser.add_argument("endpoint_b", type=Path, help="Θ^B: a trained model of the same architecture")
    parser.add_argument(
        "--method",
        type=method_name,
        default="ot",
        help="the method the matching is for: ot (default), ot+wa, ot+bfly, weight-matching",
    )
    parser.add_argument("--out", type=output_path, required=True, help="output matching (.safetensors + .json)")
    parser.add_argument("--ot-solver", choices=OT_SOLVERS, default="emd", help="OT solver (default emd, as the paper)")
    parser.add_argument(
        "--wa-samples",
        type=count(1, MAX_BATCH),
        help=f"route methods: training samples the route's weight adjustments are fitted on (default all, "
        f"at most {MAX_BATCH})",
    )
    parser.add_argument(
        "--bn-batches",
        type=count(1, MAX_BATCHES),
        metavar="N",
        help=f"route methods: {BN_BATCHES_HELP} (at most {MAX_BATCHES})",
    )
    add_seed_option(
        parser,
        "seed of the --wa-samples subset and the --bn-batches batches, and of weight-matching's order of the groups",
    )
    add_dataset_options(parser)
    add_device_option(parser)
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


def check(args: argparse.Namespace) -> None:
    method = get_method(args.method)
    method.require_matcher()
    for option in given(args, ("wa_samples", "bn_batches")):
        if method.base_name not in ROUTE_METHODS:
            flag = "--" + option.replace("_", "-")
            raise LowlossError(f"{flag} applies to the route methods' matchings, not to {method.name!r}")
    outputs = [weights_output("--out", args.out, MATCHING)]
    check_files({args.endpoint_a: MODEL, args.endpoint_b: MODEL}, outputs)


def run(args: argparse.Namespace) -> dict:
    import torch

    from lowloss.methods.context import Context, Options
    from lowloss.methods.matching import save_matching
    from lowloss.nets.network import Network
    from lowloss.storage.model_files import endpoint_params, load_endpoints
    from lowloss.training.data import check_dataset

    started = time.perf_counter()
    method = get_method(args.method)
    model, artifact_a, artifact_b = load_endpoints(args.endpoint_a, args.endpoint_b)
    data = dataset_from_args(args)
    check_dataset(data, artifact_a)
    ctx = Context(
        Network(model.to(data.x_train.device)),
        data,
        Options(
            wa_samples=args.wa_samples,
            bn_batches=args.bn_batches,
            ot_solver=args.ot_solver,
            seed=args.seed,
            progress=not args.no_progress,
        ),
        (artifact_a, artifact_b),
    )
    method.check(ctx.network, artifact_a.meta["arch"], ctx)
    perms, fitted = method.match(*endpoint_params(artifact_a, artifact_b, data.x_train.device), ctx)
    save_matching(args.out, perms, method.name, (artifact_a, artifact_b), args.ot_solver, fitted)
    moved = {group: int((perm.cpu() != torch.arange(len(perm))).sum()) for group, perm in perms.items()}
    return {
        "out": str(args.out),
        "method": method.name,
        "solver": args.ot_solver,
        "units_moved": moved,
        "seconds": round(time.perf_counter() - started, 3),
    }
