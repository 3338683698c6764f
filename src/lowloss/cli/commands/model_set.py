"""Collect trained models into a model set V (a manifest) for fitting a global connection model."""

from __future__ import annotations

import argparse
from pathlib import Path

from lowloss.cli.options import output_path
from lowloss.storage.destinations import check_files, file_output
from lowloss.storage.file_kinds import MODEL, MODEL_SET

NAME = "model-set"
HELP = "write the manifest of a model set V (models sharing architecture and dataset)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("models", nargs="+", type=Path, help="trained model files (.safetensors)")
    parser.add_argument("--out", type=output_path, required=True, help="manifest to write (JSON), e.g. V.json")
    parser.add_argument(
        "--allow-outside",
        action="store_true",
        help="accept models outside the manifest's folder (then every reader needs it too)",
    )


def check(args: argparse.Namespace) -> None:
    check_files(dict.fromkeys(args.models, MODEL), [file_output("--out", args.out, MODEL_SET)])


def run(args: argparse.Namespace) -> dict:
    from lowloss.storage.model_set import write_model_set

    manifest = write_model_set(args.out, args.models, args.allow_outside)
    return {
        "out": str(args.out),
        "models": len(manifest["models"]),
        "arch": manifest["arch"],
        "arch_options": manifest["arch_options"],
        "dataset": manifest["dataset"],
    }
