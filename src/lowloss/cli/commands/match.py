"""Compute the unit matching a method uses once per pair, for `connect --method M --matching FILE`."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from lowloss.cli.options import BN_BATCHES_HELP, add_dataset_options, add_device_option, count, dataset_from_args
from lowloss.errors import LowlossError
from lowloss.methods.context import OT_SOLVERS

NAME = "match"
HELP = (
    "match the units of two endpoints as a method does (ot, ot+wa, ot+bfly, weight-matching) and save the permutations"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("endpoint_a", type=Path, help="Θ^A: a trained model (.safetensors)")
    parser.add_argument("endpoint_b", type=Path, help="Θ^B: a trained model of the same architecture")
    parser.add_argument(
        "--method", default="ot", help="the method the matching is for: ot (default), ot+wa, ot+bfly, weight-matching"
    )
    parser.add_argument("--out", type=Path, required=True, help="output matching (.safetensors + .json)")
    parser.add_argument("--ot-solver", choices=OT_SOLVERS, default="emd", help="OT solver (default emd, as the paper)")
    parser.add_argument(
        "--wa-samples",
        type=count(1),
        help="route methods: training samples the route's weight adjustments are fitted on (default all)",
    )
    parser.add_argument("--bn-batches", type=count(1), metavar="N", help=f"route methods: {BN_BATCHES_HELP}")
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of the --wa-samples subset and the --bn-batches batches, and of weight-matching's "
        "order of the groups",
    )
    add_dataset_options(parser)
    add_device_option(parser)
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


def run(args: argparse.Namespace) -> dict:
    import torch

    from lowloss.methods.context import Context, Options
    from lowloss.methods.matching import save_matching
    from lowloss.methods.registry import ROUTE_METHODS, get_method
    from lowloss.nets.network import Network
    from lowloss.storage.model_files import endpoint_params, load_endpoints
    from lowloss.training.data import check_dataset

    started = time.perf_counter()
    method = get_method(args.method)
    if args.bn_batches is not None and method.base_name not in ROUTE_METHODS:
        raise LowlossError(f"--bn-batches applies to the route methods' matchings, not to {method.name!r}")
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
    theta_a, theta_b = endpoint_params(artifact_a, artifact_b, data.x_train.device)
    matched = time.perf_counter()
    perms, fitted = method.match(theta_a, theta_b, ctx)
    match_seconds = round(time.perf_counter() - matched, 3)
    save_matching(args.out, perms, method.name, (artifact_a, artifact_b), args.ot_solver, fitted, match_seconds)
    moved = {group: int((perm.cpu() != torch.arange(len(perm))).sum()) for group, perm in perms.items()}
    return {
        "out": str(args.out),
        "method": method.name,
        "solver": args.ot_solver,
        "units_moved": moved,
        "match_seconds": match_seconds,
        "seconds": round(time.perf_counter() - started, 3),
    }
