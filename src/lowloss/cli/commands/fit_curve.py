"""Fit a Garipov et al. curve (PolyChain or Bezier) between two trained endpoints (resumable).

The curve file holds only the trained bends (and, for an aligned curve, its matching); `lowloss connect A B
--method garipov-polychain-3 --curve CURVE.safetensors` evaluates it like any other method. A curve is named by
the method that evaluates it: `--method garipov-polychain-3` fits a polychain with 3 control points,
`--method ot+wa+polychain-3` one between Θ^A and Θ^B aligned by ot+wa's matching, started on the ot+wa route.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from lowloss.cli.options import (
    ENDPOINT_HELP,
    add_dataset_options,
    add_device_option,
    add_model_options,
    add_ot_solver_option,
    add_training_options,
    add_wa_samples_option,
    endpoints_and_data,
    model_inputs,
    options_from_args,
    output_path,
    wa_breakpoints,
)
from lowloss.methods.context import DEFAULT_BREAKPOINTS
from lowloss.methods.registry import CURVES
from lowloss.storage.destinations import check_files, weights_output
from lowloss.storage.file_kinds import CURVE, MATCHING
from lowloss.training.config import TrainConfig

NAME = "fit-curve"
HELP = "train a Garipov et al. polychain or Bezier curve between two endpoints (or between aligned ones)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model_a", type=Path, metavar="A", help=f"endpoint Θ^A: {ENDPOINT_HELP}")
    parser.add_argument("model_b", type=Path, metavar="B", help=f"endpoint Θ^B: {ENDPOINT_HELP}")
    parser.add_argument(
        "--method",
        choices=list(CURVES),
        default="garipov-polychain-3",
        help="the curve's method: family and control points including both endpoints "
        "(garipov-polychain-3 has one bend); aligned-* and ot+wa+* align Θ^B first (`lowloss methods`)",
    )
    add_dataset_options(parser, user_data=True)
    add_device_option(parser)
    add_training_options(
        parser,
        None,
        "default: the paper's budget for Garipov et al.'s curves (200 on cifar10, 60 otherwise), fewer for aligned "
        "ones; 0 leaves the bends where they start",
        "on w(t)",
        min_epochs=0,
    )
    parser.add_argument(
        "--matching", type=Path, help="aligned curves: the aligning method's matching (`lowloss match`; else computed)"
    )
    add_wa_samples_option(parser, "aligned curves")
    parser.add_argument(
        "--wa-breakpoints",
        type=wa_breakpoints,
        default=DEFAULT_BREAKPOINTS,
        metavar="K|all",
        help=f"curves started on a +wa route: its re-fitted points per stage (default {DEFAULT_BREAKPOINTS})",
    )
    add_ot_solver_option(parser, "aligned curves")
    parser.add_argument("--out", type=output_path, required=True, help="output curve .safetensors (sidecar beside it)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    add_model_options(parser)


def check(args: argparse.Namespace) -> None:
    outputs = [weights_output("--out", args.out, CURVE, resumable=True)]
    inputs = model_inputs(args, [args.model_a, args.model_b])
    if args.matching is not None:
        inputs[args.matching] = MATCHING
    check_files(inputs, outputs)


def run(args: argparse.Namespace) -> dict:
    from lowloss.methods.curves import default_epochs, fit_method_curve
    from lowloss.storage.weights import load_weights

    started = time.perf_counter()
    endpoints, data = endpoints_and_data(args, [args.model_a, args.model_b])
    model_a, model_b = endpoints.artifacts
    config = TrainConfig(
        epochs=default_epochs(args.method, data.name) if args.epochs is None else args.epochs,
        lr=args.lr,
        batch_size=args.batch_size,
        weight_decay=args.weight_decay,
        seed=args.seed,
    )
    matching = None if args.matching is None else load_weights(args.matching)
    meta = fit_method_curve(
        args.method,
        model_a,
        model_b,
        data,
        config,
        args.out,
        options_from_args(args),
        matching,
        progress=not args.no_progress,
    )
    last = meta["history"][-1] if meta["history"] else {}
    return {
        "out": str(args.out),
        "method": args.method,
        "epochs": config.epochs,
        "train_loss": last.get("train_loss"),
        "train_acc": last.get("train_acc"),
        "fit_seconds": meta["seconds"],
        "seconds": round(time.perf_counter() - started, 3),
    }
