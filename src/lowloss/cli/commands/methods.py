"""List the registered connection methods: what each does, what it needs, where it applies."""

from __future__ import annotations

import argparse

NAME = "methods"
HELP = "list the connection methods with a one-line description each"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--names", action="store_true", help="print only the names, one per line")


def run(args: argparse.Namespace) -> None:
    """A table wrapped to the terminal's width (rich; $COLUMNS, else 80 columns when not a terminal)."""
    from lowloss.methods.registry import METHODS, REPAIR

    if args.names:
        print("\n".join(sorted(METHODS)))
        return None
    from rich import box
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False, expand=True)
    table.add_column("method", no_wrap=True)
    table.add_column("what it does", ratio=5, overflow="fold")
    table.add_column("applies to", ratio=2, min_width=len("architecture,"), overflow="fold")
    table.add_column("also reads", ratio=2, min_width=len("--wa-breakpoints,"), overflow="fold")
    for name in sorted(METHODS):
        method = METHODS[name]
        reads = [
            *(f"--{need} (needed)" for need in method.needs),
            *(f"--{accepted} (else computed)" for accepted in method.accepts),
            *("--" + option.replace("_", "-") for option in method.options),
        ]
        table.add_row(name, Text(method.description), method.applies_to, Text(", ".join(reads) or "-"))
    console = Console(highlight=False)
    console.print(table)
    console.print(
        Text(
            f"Any method with {REPAIR} after its name (ot{REPAIR}, linear+wa{REPAIR}, …) builds the same path and "
            f"renormalises every evaluated point by REPAIR (see --repair-batches)."
        )
    )
    return None
