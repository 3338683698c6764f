"""Compute the unit matching a method uses once per pair, for `connect --method M --matching FILE`."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from lowloss.cli.options import (
    ENDPOINT_HELP,
    add_bn_batches_option,
    add_dataset_options,
    add_device_option,
    add_model_options,
    add_ot_solver_option,
    add_seed_option,
    add_wa_samples_option,
    add_wm_sweeps_option,
    endpoints_and_data,
    given,
    method_name,
    model_inputs,
    options_from_args,
    output_path,
)
from lowloss.errors import LowlossError
from lowloss.methods.registry import ROUTE_METHODS, get_method
from lowloss.storage.destinations import check_files, weights_output
from lowloss.storage.file_kinds import MATCHING

NAME = "match"
HELP = (
    "match the units of two endpoints as a method does (ot, ot+wa, ot+bfly, weight-matching) and save the permutations"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("endpoint_a", type=Path, help=f"Θ^A: {ENDPOINT_HELP}")
    parser.add_argument("endpoint_b", type=Path, help=f"Θ^B: {ENDPOINT_HELP}, of the same architecture")
    parser.add_argument(
        "--method",
        type=method_name,
        default="ot",
        help="the method the matching is for: ot (default), ot+wa, ot+bfly, weight-matching",
    )
    parser.add_argument("--out", type=output_path, required=True, help="output matching (.safetensors + .json)")
    add_ot_solver_option(parser)
    add_wm_sweeps_option(parser)
    add_wa_samples_option(parser, "route methods")
    add_bn_batches_option(parser, "route methods")
    add_seed_option(
        parser,
        "seed of the --wa-samples subset and the --bn-batches batches, and of weight-matching's order of the groups",
    )
    add_dataset_options(parser, user_data=True)
    add_device_option(parser)
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    add_model_options(parser)


def check(args: argparse.Namespace) -> None:
    method = get_method(args.method)
    method.require_matcher()
    method.refuse_unused(given(args, ("wm_sweeps",)))
    for option in given(args, ("wa_samples", "bn_batches")):
        if method.base_name not in ROUTE_METHODS:
            flag = "--" + option.replace("_", "-")
            raise LowlossError(f"{flag} applies to the route methods' matchings, not to {method.name!r}")
    outputs = [weights_output("--out", args.out, MATCHING)]
    check_files(model_inputs(args, [args.endpoint_a, args.endpoint_b]), outputs)


def run(args: argparse.Namespace) -> dict:
    from lowloss.api.matching import match_endpoints
    from lowloss.methods.matching import save_matching

    started = time.perf_counter()
    method = get_method(args.method)
    endpoints, data = endpoints_and_data(args, [args.endpoint_a, args.endpoint_b])
    matching = match_endpoints(endpoints, data, method, options_from_args(args))
    save_matching(
        args.out,
        matching.perms,
        method.name,
        endpoints.artifacts[:2],
        args.ot_solver,
        matching.fitted,
        round(matching.seconds, 3),
    )
    return {
        "out": str(args.out),
        "method": method.name,
        "solver": args.ot_solver,
        "units_moved": matching.units_moved,
        "match_seconds": round(matching.seconds, 3),
        "seconds": round(time.perf_counter() - started, 3),
    }
