"""Import a checkpoint of the user's own network as a lowloss model file: the file every other command (and the
workflow) reads, recording the model's reference and arguments, its input size, the dataset, the checkpoint's
digest, and its loss and accuracy on both splits."""

from __future__ import annotations

import argparse
from pathlib import Path

from lowloss.cli.options import (
    add_dataset_options,
    add_device_option,
    add_model_options,
    endpoints_and_data,
    model_inputs,
    output_path,
)
from lowloss.errors import LowlossError
from lowloss.storage.destinations import check_files, weights_output
from lowloss.storage.file_kinds import MODEL

NAME = "import"
HELP = "import a checkpoint of the user's network (--model REF) as a lowloss model file, scored on the data"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", type=Path, help="a state dict: .safetensors, or .pt/.pth/.bin/.ckpt")
    parser.add_argument("--out", type=output_path, required=True, help="the model file (.safetensors + .json sidecar)")
    add_dataset_options(parser, user_data=True)
    add_device_option(parser)
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    add_model_options(parser)


def check(args: argparse.Namespace) -> None:
    """A model to read the checkpoint as; the checkpoint, and an output that can destroy nothing else."""
    if args.model is None:
        raise LowlossError("import needs --model REF: the network the checkpoint is of")
    check_files(model_inputs(args, [args.checkpoint]), [weights_output("--out", args.out, MODEL)])


def run(args: argparse.Namespace) -> dict:
    from lowloss.storage.weights import save_weights
    from lowloss.training.train import evaluate_model

    models, data = endpoints_and_data(args, [args.checkpoint])
    model = models.model.to(data.x_train.device)
    train_loss, train_acc = evaluate_model(model, data.x_train, data.y_train)
    test_loss, test_acc = evaluate_model(model, data.x_test, data.y_test)
    meta = {
        **{key: value for key, value in models.meta.items() if key != "sha256"},  # the file's own is added on saving
        "checkpoint": str(args.checkpoint),
        "train_loss": train_loss,
        "train_acc": train_acc,
        "test_loss": test_loss,
        "test_acc": test_acc,
    }
    save_weights(args.out, models.artifacts[0].tensors, meta)
    summary = {"arch": meta["arch"], "dataset": data.name, "train_acc": train_acc, "test_acc": test_acc}
    return {"out": str(args.out), **summary}
