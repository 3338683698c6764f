"""Tabulate and plot a run's ensembles: the paper's Fig. 7 and accuracy against inference cost."""

from __future__ import annotations

import argparse
from pathlib import Path

NAME = "ensemble-report"
HELP = "ensembles.{csv,md}, Fig. 7 (test accuracy by number of models) and accuracy against inference cost"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "ensembles",
        nargs="+",
        type=Path,
        help="files of `lowloss ensemble` laid out as <experiment>/ensembles/<method>/<name>.safetensors "
        "(only their sidecars are read)",
    )
    parser.add_argument(
        "--out-dir",
        type=Path,
        required=True,
        help="folder of ensembles.{csv,md}, fig7.{png,svg} and ensembles_cost.{png,svg}",
    )


def run(args: argparse.Namespace) -> dict:
    from lowloss.results.ensembles import build_ensemble_report

    return build_ensemble_report(args.ensembles, args.out_dir)
