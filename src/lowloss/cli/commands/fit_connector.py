"""Fit a global connection model ν on a model set V (paper §3.3) and save it as a connector.

`lowloss connect A B --method KIND --connector C.safetensors` then connects endpoints outside V by
the generalised arc, eq. (7). Resumable: run the same command again after an interruption.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from lowloss.cli.options import (
    MAX_BATCH,
    MAX_FLOW_HIDDEN,
    MAX_FLOW_LAYERS,
    MAX_LR,
    MAX_STEPS,
    add_count_option,
    add_dataset_options,
    add_device_option,
    add_seed_option,
    dataset_from_args,
    output_path,
    positive_float,
)
from lowloss.errors import LowlossError
from lowloss.methods.flows.config import HIDDEN, LAYERS, FitConfig
from lowloss.methods.registry import FLOWS
from lowloss.storage.destinations import check_files, model_set_members, weights_output
from lowloss.storage.file_kinds import CONNECTOR, MODEL_SET

NAME = "fit-connector"
HELP = "fit a learnable bijection ν (RealNVP/IAF Flow, RealNVP Bijection) on a model set V"
BATCH_DEFAULTS = {"flow": 256, "bijection": 128}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--method",
        "--kind",
        dest="method",
        choices=sorted(FLOWS),
        required=True,
        help="the learned method to fit ν for",
    )
    parser.add_argument("--model-set", type=Path, required=True, help="manifest written by `lowloss model-set`")
    parser.add_argument(
        "--allow-outside", action="store_true", help="accept members of the model set outside the manifest's folder"
    )
    add_dataset_options(parser)
    add_device_option(parser)
    steps, lr, layers, hidden = FitConfig.steps, FitConfig.lr, LAYERS, HIDDEN
    add_count_option(parser, "--steps", MAX_STEPS, "optimiser steps", steps)
    parser.add_argument(
        "--lr", type=positive_float(MAX_LR), default=lr, help=f"Adam learning rate (default {lr}, at most {MAX_LR:g})"
    )
    add_count_option(
        parser,
        "--batch-size",
        MAX_BATCH,
        "neurons per step for Flow (default 256), training samples for Bijection (default 128)",
    )
    add_seed_option(parser, "seed of ν's initialisation and of every batch", FitConfig.seed)
    add_count_option(parser, "--layers", MAX_FLOW_LAYERS, "coupling / autoregressive layers of ν", layers)
    add_count_option(parser, "--hidden", MAX_FLOW_HIDDEN, "hidden width of ν's conditioner networks", hidden)
    parser.add_argument(
        "--t-uniform", action="store_true", help="Bijection: draw t ~ U(0, 1) per step instead of the midpoint t = 0.5"
    )
    parser.add_argument(
        "--out", type=output_path, required=True, help="output connector .safetensors (sidecar beside it)"
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def check(args: argparse.Namespace) -> None:
    if args.t_uniform and FLOWS[args.method][1] != "bijection":
        raise LowlossError(f"--t-uniform applies to Bijection training, not to {args.method}")
    outputs = [weights_output("--out", args.out, CONNECTOR, resumable=True)]
    check_files({args.model_set: MODEL_SET}, outputs, also_read=model_set_members(args.model_set))


def run(args: argparse.Namespace) -> dict:
    from lowloss.methods.flows.connector import fit_connector
    from lowloss.storage.model_set import load_model_set
    from lowloss.training.device import pick_device

    model_set = load_model_set(args.model_set, args.allow_outside)
    procedure = FLOWS[args.method][1]
    config = FitConfig(
        steps=args.steps,
        lr=args.lr,
        batch_size=args.batch_size or BATCH_DEFAULTS[procedure],
        seed=args.seed,
        t_uniform=args.t_uniform,
    )
    trained_on = model_set.meta["dataset"]
    if args.dataset != trained_on:
        raise LowlossError(
            f"{args.model_set}: V was trained on {trained_on!r}, not {args.dataset!r} (pass --dataset {trained_on})"
        )
    data = dataset_from_args(args) if procedure == "bijection" else None
    meta = fit_connector(
        args.method,
        model_set,
        args.out,
        args.layers,
        args.hidden,
        config,
        data,
        pick_device(args.device),
        progress=not args.no_progress,
    )
    return {
        "out": str(args.out),
        "method": args.method,
        "models": len(meta["model_set"]["hashes"]),
        "steps": config.steps,
        "score": meta["score"],
        "score_start": meta["score_start"],
        "score_end": meta["score_end"],
    }
