"""List the registered connection methods: what each does, what it needs, where it applies."""

from __future__ import annotations

import argparse

NAME = "methods"
HELP = "list the connection methods with a one-line description each"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--names", action="store_true", help="print only the names, one per line")


def run(args: argparse.Namespace) -> None:
    from lowloss.methods.registry import METHODS, REPAIR

    width = max(len(name) for name in METHODS)
    for name in sorted(METHODS):
        method = METHODS[name]
        if args.names:
            print(name)
            continue
        needs = "".join(f", needs --{need}" for need in method.needs)
        accepts = "".join(f", takes --{optional}" for optional in method.accepts)
        print(f"{name:<{width}}  {method.description} [{method.applies_to}{needs}{accepts}]")
    if not args.names:
        print(
            f"\nAny method with {REPAIR} after its name (ot{REPAIR}, linear+wa{REPAIR}, …) builds the same path and "
            f"renormalises every evaluated point by REPAIR (see --repair-batches)."
        )
    return None
