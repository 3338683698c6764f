"""Print the summary of a weight file's sidecar (after validating the file)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

NAME = "info"
HELP = "validate a weight file and print its sidecar summary"
SUMMARY_SKIP = {"tensors", "history", "format"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", type=Path, help="a .safetensors file written by lowloss")
    parser.add_argument("--json", action="store_true", help="print the whole sidecar as JSON")


def run(args: argparse.Namespace) -> None:
    from lowloss.storage.weights import load_weights

    artifact = load_weights(args.file)
    if args.json:
        print(json.dumps(artifact.meta, indent=2, sort_keys=True))
        return None
    n_params = sum(t.numel() for t in artifact.tensors.values())
    print(f"{args.file}: {len(artifact.tensors)} tensors, {n_params:,} parameters")
    for key, value in artifact.meta.items():
        if key not in SUMMARY_SKIP:
            print(f"  {key}: {json.dumps(value) if isinstance(value, (dict, list)) else value}")
    return None
