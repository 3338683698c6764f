"""Tabulate and plot path tables: the paper's Table 1 (CSV, Markdown, LaTeX) and accuracy along the path."""

from __future__ import annotations

import argparse
from pathlib import Path

from lowloss.cli.options import output_path
from lowloss.storage.destinations import REPORT_FILES, check_files, folder_output

NAME = "report"
HELP = "Table 1 (worst accuracy along the path, mean ± std over pairs) and path figures"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "paths",
        nargs="+",
        type=Path,
        help="path tables laid out as <experiment>/paths/<method>/<seedA>-<seedB>.csv "
        "(endpoint sidecars read from <experiment>/models/seed<N>.json)",
    )
    parser.add_argument(
        "--out-dir",
        type=output_path,
        required=True,
        help="folder of table1 and table2 (.csv numbers, .md and .tex in the paper's layout, .html sortable), "
        "worst_points.{csv,html}, cost.csv and one paths-<experiment>, cost-<experiment> (worst accuracy against "
        "seconds) and route-<experiment> figure each (.png, .svg, .pdf)",
    )


def check(args: argparse.Namespace) -> None:
    check_files(args.paths, [folder_output("--out-dir", args.out_dir, {}, REPORT_FILES)])


def run(args: argparse.Namespace) -> dict:
    from lowloss.results.tables import build_report

    return build_report(args.paths, args.out_dir)
