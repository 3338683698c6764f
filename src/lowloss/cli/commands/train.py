"""Train one endpoint network and save it as safetensors + JSON sidecar (resumable)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from lowloss.cli.options import (
    add_arch_options,
    add_dataset_options,
    add_device_option,
    add_training_options,
    arch_options_from_args,
    dataset_from_args,
    output_path,
)
from lowloss.storage.destinations import check_files, weights_output
from lowloss.storage.file_kinds import MODEL
from lowloss.training.config import TrainConfig

if TYPE_CHECKING:
    from torch import nn

    from lowloss.training.data import Dataset

NAME = "train"
HELP = "train an endpoint network from a seed"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_dataset_options(parser)
    add_arch_options(parser)
    add_device_option(parser)
    add_training_options(parser, TrainConfig.epochs, "training epochs")
    parser.add_argument("--out", type=output_path, required=True, help="output .safetensors (sidecar .json beside it)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def check(args: argparse.Namespace) -> None:
    arch_options_from_args(args)
    check_files({}, [weights_output("--out", args.out, MODEL, resumable=True)])


def record_test_accuracy(data: Dataset):
    """An `on_epoch_end` callback that adds the test split's loss and accuracy to each epoch's row of the
    history, so the training curves show test accuracy beside train accuracy and loss."""
    from lowloss.training.train import evaluate_model

    def record(epoch: int, row: dict, model: nn.Module) -> None:
        row["test_loss"], row["test_acc"] = evaluate_model(model, data.x_test, data.y_test)

    return record


def run(args: argparse.Namespace) -> dict:
    from lowloss.training.train import train_endpoint

    options = arch_options_from_args(args)
    data = dataset_from_args(args)
    config = TrainConfig(
        epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, weight_decay=args.weight_decay, seed=args.seed
    )
    meta = train_endpoint(
        args.arch,
        options,
        data,
        config,
        args.out,
        on_epoch_end=record_test_accuracy(data),
        progress=not args.no_progress,
    )
    summary = {key: meta[key] for key in ("arch", "dataset", "seed", "epochs", "train_acc", "test_acc")}
    return {"out": str(args.out), **summary}
