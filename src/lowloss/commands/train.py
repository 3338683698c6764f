"""Train one endpoint network and save it as safetensors + JSON sidecar (resumable)."""

from __future__ import annotations

import argparse
from pathlib import Path

from lowloss.commands.options import (add_arch_options, add_dataset_options, add_device_option,
                                      arch_options_from_args, count, dataset_from_args, non_negative_float,
                                      positive_float)
from lowloss.train import TrainConfig, train_endpoint

NAME = "train"
HELP = "train an endpoint network from a seed"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_dataset_options(parser)
    add_arch_options(parser)
    add_device_option(parser)
    defaults = TrainConfig()
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--epochs", type=count(1), default=defaults.epochs)
    parser.add_argument("--lr", type=positive_float, default=defaults.lr)
    parser.add_argument("--batch-size", type=count(1), default=defaults.batch_size)
    parser.add_argument("--weight-decay", type=non_negative_float, default=defaults.weight_decay)
    parser.add_argument("--out", type=Path, required=True, help="output .safetensors (sidecar .json beside it)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def run(args: argparse.Namespace) -> dict:
    options = arch_options_from_args(args)
    data = dataset_from_args(args)
    config = TrainConfig(epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
                         weight_decay=args.weight_decay, seed=args.seed)
    meta = train_endpoint(args.arch, options, data, config, args.out, progress=not args.no_progress)
    summary = {key: meta[key] for key in ("arch", "dataset", "seed", "epochs", "train_acc", "test_acc")}
    return {"out": str(args.out), **summary}
