"""List the registered connection methods: what each does, what it needs, where it applies."""

from __future__ import annotations

import argparse

NAME = "methods"
HELP = "list the connection methods with a one-line description each"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--names", action="store_true", help="print only the names, one per line")


def run(args: argparse.Namespace) -> None:
    from lowloss.connect.registry import METHODS, get_method

    get_method("linear")  # imports every method module, so the registry is complete
    width = max(len(name) for name in METHODS)
    for name in sorted(METHODS):
        method = METHODS[name]
        if args.names:
            print(name)
            continue
        needs = "".join(f", needs --{need}" for need in method.needs)
        print(f"{name:<{width}}  {method.description} [{method.applies_to}{needs}]")
    return None
