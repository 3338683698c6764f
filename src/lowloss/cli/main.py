"""The `lowloss` command: one subcommand per module in `lowloss.cli.commands`.

A subcommand's `check(args)`, where it has one, runs first: every check that needs no data (names, files,
outputs, options a method does not read), before torch or the data are loaded, so such a mistake is
refused at once. Its `run(args)` returns a summary dict (or None); it is printed as the LAST line of stdout,
one JSON object, which scripts and the workflow read. Every error reaches the user as one line,
`lowloss: error: …`, and exit status 2; set LOWLOSS_DEBUG=1 to see the traceback instead. Large freed blocks
stay in the process's heap (`lowloss.cli.allocator`).
With `--mlflow-experiment` (or $LOWLOSS_MLFLOW_EXPERIMENT) every command is logged as one MLflow run
(`lowloss.tracking.runs`). On success a one-line summary for people goes to stderr. Nothing imported here
imports torch (commands import it when they run), so `--help` answers at once.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time

from lowloss import __version__
from lowloss.cli.allocator import keep_large_blocks
from lowloss.cli.commands import (
    connect,
    ensemble,
    ensemble_report,
    fit_connector,
    fit_curve,
    import_checkpoint,
    info,
    match,
    methods,
    model_set,
    report,
    train,
)
from lowloss.cli.summary import human_summary
from lowloss.errors import LowlossError
from lowloss.tracking import runs as tracking

EXIT_ERROR = 2
COMMANDS = [
    train,
    import_checkpoint,
    fit_curve,
    model_set,
    fit_connector,
    match,
    connect,
    ensemble,
    methods,
    report,
    ensemble_report,
    info,
]
"""The subcommands, in the order `lowloss --help` lists them."""
COMMANDS_BY_NAME = {command.NAME: command for command in COMMANDS}


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of printing usage, so usage errors are one line too (under the one
    `lowloss: error:` prefix, without the program's name again)."""

    def error(self, message: str):
        raise LowlossError(message)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="lowloss", description="Low-loss connection of neural-network weight vectors.")
    parser.add_argument("--version", action="version", version=f"lowloss {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    tracking.add_tracking_options(parser)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for command in COMMANDS:
        command_parser = sub.add_parser(command.NAME, help=command.HELP, description=command.__doc__)
        command.add_arguments(command_parser)
        command_parser.set_defaults(run=command.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the exit status."""
    start, args = time.time(), None
    try:
        args = build_parser().parse_args(argv)
        logging.basicConfig(
            level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
        )
        check = getattr(COMMANDS_BY_NAME[args.command], "check", None)
        if check is not None:
            check(args)
        keep_large_blocks()
        summary = args.run(args)
        tracking.log_command(args, summary, start)
        if summary is not None:
            print(human_summary(args.command, summary, time.time() - start), file=sys.stderr, flush=True)
            print(json.dumps(summary), flush=True)
        return 0
    except LowlossError as exc:
        return _fail(str(exc), exc, args, start)
    except KeyboardInterrupt:
        print("lowloss: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`lowloss methods | head`): nothing left to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as exc:  # a file the command could not read or write: name it, without the exception type
        return _fail(os_error_message(exc), exc, args, start)
    except Exception as exc:  # one line for the user, whatever broke; LOWLOSS_DEBUG shows the trace
        return _fail(f"{type(exc).__name__}: {exc}", exc, args, start)


def os_error_message(exc: OSError) -> str:
    """`FILE: reason` for an OSError (a symbolic link loop, a full disk, a permission, …)."""
    reason = exc.strerror or str(exc)
    return f"{exc.filename}: {reason}" if exc.filename is not None else reason


def _fail(message: str, exc: BaseException, args: argparse.Namespace | None, start: float) -> int:
    if args is not None:
        tracking.log_command(args, None, start, error=message)
    if os.environ.get("LOWLOSS_DEBUG"):
        raise exc
    print(f"lowloss: error: {' '.join(message.split())}", file=sys.stderr)
    return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
