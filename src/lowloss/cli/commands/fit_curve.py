"""Fit a Garipov et al. curve (PolyChain or Bezier) between two trained endpoints (resumable).

The curve file holds only the trained bends; `lowloss connect A B --method garipov-polychain-3
--curve CURVE.safetensors` evaluates it like any other method. A curve is named by the method that
evaluates it: `--method garipov-polychain-3` fits a polychain with 3 control points.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from lowloss.cli.options import (
    ENDPOINT_HELP,
    add_dataset_options,
    add_device_option,
    add_model_options,
    add_training_options,
    endpoints_and_data,
    model_inputs,
    output_path,
)
from lowloss.methods.registry import CURVES
from lowloss.storage.destinations import check_files, weights_output
from lowloss.storage.file_kinds import CURVE
from lowloss.training.config import TrainConfig

NAME = "fit-curve"
HELP = "train a Garipov et al. polychain or Bezier curve between two endpoints"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model_a", type=Path, metavar="A", help=f"endpoint Θ^A: {ENDPOINT_HELP}")
    parser.add_argument("model_b", type=Path, metavar="B", help=f"endpoint Θ^B: {ENDPOINT_HELP}")
    parser.add_argument(
        "--method",
        choices=list(CURVES),
        default="garipov-polychain-3",
        help="the curve's method: family and control points including both endpoints "
        "(garipov-polychain-3 has one bend)",
    )
    add_dataset_options(parser, user_data=True)
    add_device_option(parser)
    add_training_options(parser, None, "default: the paper's budget, 200 on cifar10, 60 otherwise", "on w(t)")
    parser.add_argument("--out", type=output_path, required=True, help="output curve .safetensors (sidecar beside it)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    add_model_options(parser)


def check(args: argparse.Namespace) -> None:
    outputs = [weights_output("--out", args.out, CURVE, resumable=True)]
    check_files(model_inputs(args, [args.model_a, args.model_b]), outputs)


def run(args: argparse.Namespace) -> dict:
    from lowloss.methods.curves import fit_curve, paper_epochs

    family, points = CURVES[args.method]
    endpoints, data = endpoints_and_data(args, [args.model_a, args.model_b])
    model_a, model_b = endpoints.artifacts
    config = TrainConfig(
        epochs=args.epochs or paper_epochs(data.name),
        lr=args.lr,
        batch_size=args.batch_size,
        weight_decay=args.weight_decay,
        seed=args.seed,
    )
    meta = fit_curve(family, points, model_a, model_b, data, config, args.out, progress=not args.no_progress)
    return {
        "out": str(args.out),
        "method": args.method,
        "epochs": config.epochs,
        "train_loss": meta["history"][-1]["train_loss"],
        "train_acc": meta["history"][-1]["train_acc"],
    }
