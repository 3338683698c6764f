"""Connect two endpoints by a registered method and evaluate loss and accuracy along the path."""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

from lowloss.api.defaults import POINTS, REPAIR_BATCHES
from lowloss.cli.options import (
    ENDPOINT_HELP,
    MAX_BATCHES,
    MAX_POINTS,
    add_bn_batches_option,
    add_dataset_options,
    add_device_option,
    add_model_options,
    add_ot_solver_option,
    add_seed_option,
    add_wa_samples_option,
    add_wm_sweeps_option,
    count,
    endpoints_and_data,
    given,
    method_name,
    model_inputs,
    options_from_args,
    output_path,
    points_per_leg,
    wa_breakpoints,
)
from lowloss.evaluate.adaptive import COARSE_POINTS, TOLERANCE
from lowloss.methods.context import DEFAULT_BREAKPOINTS
from lowloss.methods.registry import FILE_INPUTS, OPTIONS, get_method
from lowloss.storage.destinations import check_files, file_output, folder_output
from lowloss.storage.file_kinds import BREAKPOINT, CONNECTOR, CURVE, MATCHING, PATH_TABLE, SIDECAR

if TYPE_CHECKING:
    from lowloss.nets.params import Params
    from lowloss.paths.legs import Path as ConnectionPath
    from lowloss.storage.weights import Artifact

NAME = "connect"
HELP = "build a method's path between two endpoints and evaluate it (CSV table + JSON summary)"
log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("endpoint_a", type=Path, help=f"Θ^A: {ENDPOINT_HELP}")
    parser.add_argument("endpoint_b", type=Path, help=f"Θ^B: {ENDPOINT_HELP}, of the same architecture")
    parser.add_argument("--method", type=method_name, required=True, help="connection method (see `lowloss methods`)")
    add_dataset_options(parser, user_data=True)
    add_device_option(parser)
    parser.add_argument(
        "--points",
        type=points_per_leg,
        default=POINTS,
        metavar="N|auto",
        help=f"evaluated points per leg (default {POINTS}, at most {MAX_POINTS}), or auto: {COARSE_POINTS} per leg, "
        f"then a golden-section search of each split's worst point to {TOLERANCE} in t",
    )
    parser.add_argument(
        "--screen-swaps",
        action="store_true",
        help="permutation stages of networks with dense layers after the group's reader: every swap leg's accuracy "
        "exact, its loss only for each stage's legs of the lowest accuracy (empty elsewhere); the same worst points",
    )
    parser.add_argument("--out", type=output_path, required=True, help="output CSV: one row per leg, t and split")
    parser.add_argument("--save-path", type=output_path, help="folder for the path's breakpoints (safetensors)")
    parser.add_argument("--connector", type=Path, help="fitted connector (learned ν) for realnvp-*/iaf-*")
    parser.add_argument("--curve", type=Path, help="fitted curve for garipov-*")
    parser.add_argument("--matching", type=Path, help="OT matching from `lowloss match --method M` (else computed)")
    parser.add_argument("--allow-seen", action="store_true", help="allow endpoints a connector was fitted on")
    parser.add_argument(
        "--wa-breakpoints",
        type=wa_breakpoints,
        metavar="K|all",
        help=f"*+wa: points per stage where the next layer is re-fitted (2 to {MAX_POINTS}), or 'all' for every "
        f"evaluated t (default {DEFAULT_BREAKPOINTS})",
    )
    add_wa_samples_option(parser, "*+wa, *+bfly")
    add_ot_solver_option(parser)
    add_wm_sweeps_option(parser)
    add_bn_batches_option(parser)
    parser.add_argument(
        "--repair-batches",
        type=count(1, MAX_BATCHES),
        metavar="N",
        help=f"*+repair: training batches of 128 the channel statistics are measured on (default {REPAIR_BATCHES}, "
        f"at most {MAX_BATCHES})",
    )
    add_seed_option(
        parser, "seed of every random choice (WA's sample subset, the --bn-batches and --repair-batches batches)"
    )
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    add_model_options(parser)


def optional_weights(path: Path | None) -> Artifact | None:
    from lowloss.storage.weights import load_weights

    return None if path is None else load_weights(path)


def save_breakpoints(folder: Path, path: ConnectionPath, meta: dict) -> None:
    """Every breakpoint outside permutation stages as safetensors, and a manifest of the legs.

    Swap legs are listed by the two units they exchange: their breakpoints are permutations of the
    stage's end and would cost one full copy of the network each.
    """
    from lowloss.paths.swaps import SwapLeg
    from lowloss.storage.atomic import write_json_atomic
    from lowloss.storage.file_kinds import BREAKPOINT
    from lowloss.storage.weights import save_weights

    legs, saved = [], {}

    def file_of(params: Params, index: int) -> str:
        name = f"breakpoint-{index:04d}.safetensors"
        if name not in saved:
            save_weights(folder / name, params, {**meta, "kind": BREAKPOINT, "index": index})
            saved[name] = True
        return name

    for index, leg in enumerate(path):
        if isinstance(leg, SwapLeg):
            legs.append({"name": leg.name, "swap_units": list(leg.units)})
            continue
        legs.append({"name": leg.name, "start": file_of(leg.start, index), "end": file_of(leg.end, index + 1)})
    if path.legs and isinstance(path.legs[-1], SwapLeg):
        legs.append({"name": "end", "start": file_of(path.theta_b, len(path))})
    write_json_atomic(folder / "path.json", {"method": path.method, "legs": legs})


def check(args: argparse.Namespace) -> None:
    """Options the method does not read, the files it reads (of their kinds) and its outputs."""
    get_method(args.method).refuse_unused(given(args, (*OPTIONS, *FILE_INPUTS)))
    files = {"connector": CONNECTOR, "curve": CURVE, "matching": MATCHING}
    inputs = model_inputs(args, [args.endpoint_a, args.endpoint_b])
    inputs.update({getattr(args, name): kind for name, kind in files.items() if getattr(args, name) is not None})
    outputs = [file_output("--out", args.out, PATH_TABLE)]
    if args.save_path is not None:
        breakpoints = {"breakpoint-*.safetensors": BREAKPOINT, "breakpoint-*.json": SIDECAR}
        outputs.append(folder_output("--save-path", args.save_path, {"path.json": None}, breakpoints))
    check_files(inputs, outputs)


def run(args: argparse.Namespace) -> dict:
    from lowloss.api.connection import connect_endpoints
    from lowloss.storage.model_files import model_meta
    from lowloss.storage.path_table import write_path_table

    started = time.perf_counter()
    method = get_method(args.method)
    endpoints, data = endpoints_and_data(args, [args.endpoint_a, args.endpoint_b])
    connection = connect_endpoints(
        endpoints,
        data,
        method,
        options_from_args(args),
        args.points,
        args.repair_batches,
        connector=optional_weights(args.connector),
        curve=optional_weights(args.curve),
        matching=optional_weights(args.matching),
        started=started,
        screen_swaps=args.screen_swaps,
    )
    if args.save_path is not None:
        save_breakpoints(args.save_path, connection.path, model_meta(endpoints.meta))
    write_path_table(args.out, connection.evaluated, connection.arch, connection.cost)
    return {**connection.summary(), "out": str(args.out)}
