"""Connect two endpoints by a registered method and evaluate loss and accuracy along the path."""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

from lowloss.commands.options import add_dataset_options, add_device_option, dataset_from_args
from lowloss.defaults import OT_SOLVERS as SOLVERS
from lowloss.defaults import WA_BREAKPOINTS as DEFAULT_BREAKPOINTS
from lowloss.errors import LowlossError

if TYPE_CHECKING:
    import torch
    from torch import nn

    from lowloss.artifacts import Artifact
    from lowloss.connect.path import Path as ConnectionPath
    from lowloss.data import Dataset
    from lowloss.spec import Params

NAME = "connect"
HELP = "build a method's path between two endpoints and evaluate it (CSV table + JSON summary)"
MODEL_KEYS = ("arch", "arch_options", "input_shape", "num_classes", "dataset")
log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("endpoint_a", type=Path, help="Θ^A: a trained model (.safetensors)")
    parser.add_argument("endpoint_b", type=Path, help="Θ^B: a trained model of the same architecture")
    parser.add_argument("--method", required=True, help="connection method (see `lowloss methods`)")
    add_dataset_options(parser)
    add_device_option(parser)
    parser.add_argument("--points", type=int, default=21, help="evaluated points per leg (default 21)")
    parser.add_argument("--out", type=Path, required=True, help="output CSV: one row per leg, t and split")
    parser.add_argument("--save-path", type=Path, help="folder for the path's breakpoints (safetensors)")
    parser.add_argument("--connector", type=Path, help="fitted connector (learned ν) for realnvp-*/iaf-*")
    parser.add_argument("--curve", type=Path, help="fitted curve for garipov-*")
    parser.add_argument("--matching", type=Path, help="OT matching from `lowloss match` (else computed)")
    parser.add_argument("--allow-seen", action="store_true", help="allow endpoints a connector was fitted on")
    parser.add_argument("--wa-breakpoints", type=int, default=DEFAULT_BREAKPOINTS,
                        help=f"*+wa: breakpoints where the output layer is re-fitted (default {DEFAULT_BREAKPOINTS})")
    parser.add_argument("--wa-samples", type=int, help="*+wa: training samples of the fit (default all)")
    parser.add_argument("--ot-solver", choices=SOLVERS, default="emd", help="OT solver (default emd, as the paper)")
    parser.add_argument("--seed", type=int, default=0, help="seed of every random choice (WA's sample subset)")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


def load_endpoints(path_a: Path, path_b: Path) -> tuple[nn.Module, Artifact, Artifact]:
    """Both endpoints, validated, of one architecture, width and dataset; the model is A's."""
    from lowloss.models import load_model

    model, artifact_a = load_model(path_a)
    _, artifact_b = load_model(path_b)
    for key in MODEL_KEYS:
        if artifact_a.meta.get(key) != artifact_b.meta.get(key):
            raise LowlossError(f"{path_b}: {key} {artifact_b.meta.get(key)!r} differs from {path_a}'s "
                               f"{artifact_a.meta.get(key)!r}; endpoints must share architecture and dataset")
    return model, artifact_a, artifact_b


def check_dataset(data: Dataset, artifact: Artifact) -> None:
    """The dataset must fit the checkpoint's input shape and classes (another dataset only warns)."""
    meta = artifact.meta
    if list(data.input_shape) != list(meta["input_shape"]) or data.num_classes != meta["num_classes"]:
        raise LowlossError(f"{artifact.path}: expects inputs {meta['input_shape']} and {meta['num_classes']} "
                           f"classes, dataset {data.name!r} has {list(data.input_shape)} and {data.num_classes}")
    if meta.get("dataset") != data.name:
        log.warning("endpoints were trained on %r, evaluating on %r", meta.get("dataset"), data.name)


def optional_weights(path: Path | None) -> Artifact | None:
    from lowloss.artifacts import load_weights

    return None if path is None else load_weights(path)


def endpoint_metrics(model: nn.Module, endpoints: list[Params], data: Dataset) -> dict[str, torch.Tensor]:
    """Accuracy of each endpoint per split (the table's swap legs may not contain Θ^B itself)."""
    import torch

    from lowloss.connect.path import stack_params
    from lowloss.evaluate import evaluate_stacked

    stacked = {k: v.to(data.x_train.device, torch.float32) for k, v in stack_params(endpoints).items()}
    return {split: evaluate_stacked(model, stacked, *data.split(split), batch=4096)[1] for split in ("train", "test")}


def save_breakpoints(folder: Path, path: ConnectionPath, meta: dict) -> None:
    """Every breakpoint outside permutation stages as safetensors, and a manifest of the legs.

    Swap legs are listed by the two units they exchange: their breakpoints are permutations of the
    stage's end and would cost one full copy of the network each.
    """
    from lowloss.artifacts import save_weights, write_json_atomic

    legs, saved = [], {}

    def file_of(params: Params, index: int) -> str:
        name = f"breakpoint-{index:04d}.safetensors"
        if name not in saved:
            save_weights(folder / name, params, {**meta, "kind": "breakpoint", "index": index})
            saved[name] = True
        return name

    for index, leg in enumerate(path):
        if "swap_units" in leg.meta:
            legs.append({"name": leg.name, "swap_units": list(leg.meta["swap_units"])})
            continue
        legs.append({"name": leg.name, "start": file_of(leg.start, index), "end": file_of(leg.end, index + 1)})
    if path.legs and "swap_units" in path.legs[-1].meta:
        legs.append({"name": "end", "start": file_of(path.theta_b, len(path))})
    write_json_atomic(folder / "path.json", {"method": path.method, "legs": legs})


def run(args: argparse.Namespace) -> dict:
    from lowloss.artifacts import write_text_atomic
    from lowloss.connect.registry import Context, get_method
    from lowloss.evaluate import evaluate_path, worst_points

    started = time.perf_counter()
    method = get_method(args.method)
    if args.points < 1:
        raise LowlossError(f"--points must be at least 1 (got {args.points})")
    model, artifact_a, artifact_b = load_endpoints(args.endpoint_a, args.endpoint_b)
    data = dataset_from_args(args)
    check_dataset(data, artifact_a)
    spec = model.spec()
    ctx = Context(model, spec, data,
                  {"wa_breakpoints": args.wa_breakpoints, "wa_samples": args.wa_samples,
                   "ot_solver": args.ot_solver, "seed": args.seed, "allow_seen": args.allow_seen,
                   "progress": not args.no_progress},
                  (artifact_a, artifact_b), connector=optional_weights(args.connector),
                  curve=optional_weights(args.curve), matching=optional_weights(args.matching))
    method.check(spec, artifact_a.meta["arch"], ctx)
    device = data.x_train.device
    theta_a, theta_b = ({k: v.to(device) for k, v in a.tensors.items()} for a in (artifact_a, artifact_b))
    path = method.build(theta_a, theta_b, ctx)
    path.method = method.name
    built = time.perf_counter()
    table = evaluate_path(model, path, data, args.points, progress=not args.no_progress)
    worst = worst_points(table)
    ends = endpoint_metrics(model, [theta_a, theta_b], data)
    if args.save_path is not None:
        save_breakpoints(args.save_path, path, {key: artifact_a.meta.get(key) for key in MODEL_KEYS})
    write_text_atomic(args.out, table.to_csv(index=False))
    return {"method": method.name, "worst_train_acc": worst["train"]["acc"], "worst_test_acc": worst["test"]["acc"],
            "worst_train_loss": worst["train"]["loss"], "worst_test_loss": worst["test"]["loss"],
            "worst_test_position": worst["test"]["position"],
            "endpoint_train_acc": ends["train"].min().item(), "endpoint_test_acc": ends["test"].min().item(),
            "legs": len(path), "points": int((table["split"] == "test").sum()),
            "build_seconds": round(built - started, 3), "seconds": round(time.perf_counter() - started, 3),
            "out": str(args.out)}
