"""Connect two endpoints by a registered method and evaluate loss and accuracy along the path."""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

from lowloss.cli.options import (
    BN_BATCHES_HELP,
    MAX_BATCH,
    MAX_BATCHES,
    MAX_POINTS,
    add_dataset_options,
    add_device_option,
    add_seed_option,
    count,
    dataset_from_args,
    given,
    method_name,
    output_path,
    wa_breakpoints,
)
from lowloss.methods.context import DEFAULT_BREAKPOINTS, OT_SOLVERS
from lowloss.methods.registry import FILE_INPUTS, OPTIONS, get_method
from lowloss.storage.destinations import check_files, file_output, folder_output
from lowloss.storage.file_kinds import BREAKPOINT, CONNECTOR, CURVE, MATCHING, MODEL, PATH_TABLE, SIDECAR

if TYPE_CHECKING:
    from lowloss.evaluate.fixes import PointFix
    from lowloss.methods.registry import Method
    from lowloss.nets.network import Network
    from lowloss.nets.params import Params
    from lowloss.paths.legs import Path as ConnectionPath
    from lowloss.storage.weights import Artifact
    from lowloss.training.data import Dataset

NAME = "connect"
HELP = "build a method's path between two endpoints and evaluate it (CSV table + JSON summary)"
MODEL_KEYS = ("arch", "arch_options", "input_shape", "num_classes", "dataset")
REPAIR_BATCHES = 8
"""1024 samples: a channel's mean and deviation then have a standard error of about 3 % of its deviation
(less for conv channels, which add every position), and measuring them at a point and its leg's ends costs
about 4 % of evaluating the point on Fashion-MNIST's 70000 images."""
log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("endpoint_a", type=Path, help="Θ^A: a trained model (.safetensors)")
    parser.add_argument("endpoint_b", type=Path, help="Θ^B: a trained model of the same architecture")
    parser.add_argument("--method", type=method_name, required=True, help="connection method (see `lowloss methods`)")
    add_dataset_options(parser)
    add_device_option(parser)
    parser.add_argument(
        "--points",
        type=count(1, MAX_POINTS),
        default=21,
        help=f"evaluated points per leg (default 21, at most {MAX_POINTS})",
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
    parser.add_argument(
        "--wa-samples",
        type=count(1, MAX_BATCH),
        help=f"*+wa, *+bfly: training samples the weight adjustments are fitted on (default all, at most {MAX_BATCH})",
    )
    parser.add_argument("--ot-solver", choices=OT_SOLVERS, default="emd", help="OT solver (default emd, as the paper)")
    parser.add_argument(
        "--bn-batches", type=count(1, MAX_BATCHES), metavar="N", help=f"{BN_BATCHES_HELP} (at most {MAX_BATCHES})"
    )
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


def fixes_from_args(args: argparse.Namespace, method: Method, network: Network, data: Dataset) -> dict[str, PointFix]:
    """`--bn-batches` and, for a `*+repair` method, REPAIR on `--repair-batches` (`check` refuses it for others)."""
    from lowloss.evaluate.fixes import point_fixes

    repair_batches = (args.repair_batches or REPAIR_BATCHES) if method.repair else None
    return point_fixes(network, data.x_train, args.seed, args.bn_batches, repair_batches)


def check(args: argparse.Namespace) -> None:
    """Options the method does not read, the files it reads (of their kinds) and its outputs."""
    get_method(args.method).refuse_unused(given(args, (*OPTIONS, *FILE_INPUTS)))
    files = {"connector": CONNECTOR, "curve": CURVE, "matching": MATCHING}
    inputs = {args.endpoint_a: MODEL, args.endpoint_b: MODEL}
    inputs.update({getattr(args, name): kind for name, kind in files.items() if getattr(args, name) is not None})
    outputs = [file_output("--out", args.out, PATH_TABLE)]
    if args.save_path is not None:
        breakpoints = {"breakpoint-*.safetensors": BREAKPOINT, "breakpoint-*.json": SIDECAR}
        outputs.append(folder_output("--save-path", args.save_path, {"path.json": None}, breakpoints))
    check_files(inputs, outputs)


def run(args: argparse.Namespace) -> dict:
    from lowloss.evaluate.engine import endpoint_scores, evaluate_path, worst_points
    from lowloss.methods.context import Context, Options
    from lowloss.methods.registry import get_method
    from lowloss.nets.network import Network
    from lowloss.storage.model_files import endpoint_params, load_endpoints
    from lowloss.storage.path_table import write_path_table
    from lowloss.training.data import check_dataset

    started = time.perf_counter()
    method = get_method(args.method)
    model, artifact_a, artifact_b = load_endpoints(args.endpoint_a, args.endpoint_b)
    data = dataset_from_args(args)
    check_dataset(data, artifact_a)
    options = Options(
        wa_breakpoints=args.wa_breakpoints or DEFAULT_BREAKPOINTS,
        wa_samples=args.wa_samples,
        bn_batches=args.bn_batches,
        ot_solver=args.ot_solver,
        seed=args.seed,
        allow_seen=args.allow_seen,
        progress=not args.no_progress,
    )
    ctx = Context(
        Network(model.to(data.x_train.device)),
        data,
        options,
        (artifact_a, artifact_b),
        connector=optional_weights(args.connector),
        curve=optional_weights(args.curve),
        matching=optional_weights(args.matching),
    )
    method.check(ctx.network, artifact_a.meta["arch"], ctx)
    fixes = fixes_from_args(args, method, ctx.network, data)
    theta_a, theta_b = endpoint_params(artifact_a, artifact_b, data.x_train.device)
    path = method.build(theta_a, theta_b, ctx)
    built = time.perf_counter()
    table = evaluate_path(
        ctx.network, path, data, args.points, progress=not args.no_progress, fixes=list(fixes.values())
    )
    worst, ends = worst_points(table), endpoint_scores(table)
    if args.save_path is not None:
        save_breakpoints(args.save_path, path, {key: artifact_a.meta.get(key) for key in MODEL_KEYS})
    write_path_table(args.out, table, artifact_a.meta["arch"])
    return {
        "method": method.name,
        "worst_train_acc": worst["train"]["acc"],
        "worst_test_acc": worst["test"]["acc"],
        "worst_train_loss": worst["train"]["loss"],
        "worst_test_loss": worst["test"]["loss"],
        "worst_test_position": worst["test"]["position"],
        "endpoint_train_acc": min(ends["train"].values()),
        "endpoint_test_acc": min(ends["test"].values()),
        "legs": len(path),
        "points": int((table["split"] == "test").sum()),
        **{f"{name}_samples": fix.samples for name, fix in fixes.items()},
        "build_seconds": round(built - started, 3),
        "seconds": round(time.perf_counter() - started, 3),
        "out": str(args.out),
    }
