"""Print the summary of a weight file's sidecar (after validating the file), or the spec of a model: its groups
of units that permute together, their sizes, the route's stages and the methods that apply."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

from lowloss.cli.options import INPUT_SIZE_RANGE, add_model_options, input_size, model_ref_from_args
from lowloss.errors import LowlossError

if TYPE_CHECKING:
    from lowloss.nets.network import Network

NAME = "info"
HELP = "validate a weight file and print its sidecar summary, or (--model) print a model's spec"
SUMMARY_SKIP = {"tensors", "history", "format"}
SHOWN_MEMBERS = 4
"""Tensors named per group in the text summary (the JSON lists them all)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "file", type=Path, nargs="?", help="a .safetensors file written by lowloss, or with --model a checkpoint"
    )
    parser.add_argument("--json", action="store_true", help="print the whole sidecar (or spec) as JSON")
    add_model_options(parser)
    parser.add_argument(
        "--input-size",
        type=input_size,
        metavar="C,H,W",
        help=f"--model: the size of one input, which the spec is inferred for ({INPUT_SIZE_RANGE})",
    )


def run(args: argparse.Namespace) -> None:
    if args.model is not None:
        return show_spec(args)
    if args.file is None:
        raise LowlossError("info needs a weight file, or --model REF (with --input-size) for a model's spec")
    from lowloss.storage.file_kinds import require_not_checkpoint
    from lowloss.storage.weights import load_weights

    require_not_checkpoint(args.file)
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


def show_spec(args: argparse.Namespace) -> None:
    """The spec of `--model` (with the checkpoint's weights when a file is given, else random ones)."""
    import torch

    from lowloss.api.models import Endpoints, checkpoints, with_inputs
    from lowloss.nets.external import build_reference
    from lowloss.storage.model_files import reference_meta
    from lowloss.storage.weights import Artifact

    if args.input_size is None:
        raise LowlossError(f"info --model {args.model}: pass --input-size C,H,W, the size its spec is inferred for")
    reference = model_ref_from_args(args)
    if args.file is not None:
        models = checkpoints([args.file], reference)
    else:
        model = build_reference(reference.text, reference.args)
        random = Artifact(Path(reference.text), model.state_dict(), reference_meta(reference))
        models = Endpoints(model, (random,))
    models = with_inputs(models, args.input_size, None)
    summary = spec_summary(models.network(torch.device("cpu")), models.meta)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print_spec(summary)
    return None


def spec_summary(network: Network, meta: dict) -> dict:
    """The model, its spec's groups (units and the tensor axes that carry them), stages and applicable methods."""
    from lowloss.methods.registry import METHODS

    params = network.model.state_dict()
    spec = network.spec
    try:
        stages = [list(stage.groups) for stage in network.stages]
    except LowlossError as exc:
        stages = str(exc)
    return {
        "model": meta["arch"],
        "model_args": meta["arch_options"],
        "input_shape": list(meta["input_shape"]),
        "outputs": meta["num_classes"],
        "parameters": sum(tensor.numel() for tensor in params.values()),
        "tensors": len(params),
        "tensors_permuted": sum(1 for axes in spec.axes.values() if any(group is not None for group in axes)),
        "groups": {
            group: {"units": spec.size(params, group), "members": [f"{key}[{axis}]" for key, axis in members]}
            for group, members in ((group, spec.members(group)) for group in spec.groups)
        },
        "stages": stages,
        "topology": network.topology,
        "methods": [name for name, method in METHODS.items() if method.applies(network.topology)],
    }


def print_spec(summary: dict) -> None:
    shape = "×".join(map(str, summary["input_shape"]))
    print(
        f"{summary['model']} {json.dumps(summary['model_args'])}: {summary['parameters']:,} parameters, "
        f"inputs {shape}, {summary['outputs']} outputs"
    )
    groups = summary["groups"]
    print(f"  {len(groups)} groups of units; {summary['tensors_permuted']} of {summary['tensors']} tensors permute")
    width = max((len(group) for group in groups), default=5)
    for group, entry in groups.items():
        members = entry["members"]
        more = f", … ({len(members)} axes)" if len(members) > SHOWN_MEMBERS else ""
        shown = ", ".join(members[:SHOWN_MEMBERS]) + more
        print(f"    {group:<{width}}  {entry['units']:>6} units  {shown}")
    stages = summary["stages"]
    if isinstance(stages, str):
        print(f"  stages: none ({stages})")
    else:
        print(f"  {len(stages)} stages: {' | '.join('+'.join(stage) for stage in stages)}")
    print(f"  topology: {summary['topology']}")
    print(f"  methods that apply: {', '.join(summary['methods'])}")
