"""Tabulate and plot a run's ensembles: the paper's Fig. 7 and accuracy against inference cost."""

from __future__ import annotations

import argparse
from pathlib import Path

from lowloss.cli.options import output_path
from lowloss.storage.destinations import REPORT_FILES, check_files, folder_output

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
        type=output_path,
        required=True,
        help="folder of ensembles.{csv,md}, fig7.{png,svg} and ensembles_cost.{png,svg}",
    )


def check(args: argparse.Namespace) -> None:
    check_files(args.ensembles, [folder_output("--out-dir", args.out_dir, {}, REPORT_FILES)])


def run(args: argparse.Namespace) -> dict:
    from lowloss.results.ensembles import build_ensemble_report

    return build_ensemble_report(args.ensembles, args.out_dir)
