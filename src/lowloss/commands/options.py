"""Command-line options shared by several subcommands (dataset, device, architecture options).

Parsers are built without importing torch (names come from `lowloss.defaults`); the data and the
device are loaded only when a command runs.
"""

from __future__ import annotations

import argparse
import logging
import time
from typing import TYPE_CHECKING

from lowloss.defaults import ARCHITECTURES, DATASETS
from lowloss.errors import LowlossError, unknown_name

if TYPE_CHECKING:
    from lowloss.data import Dataset

log = logging.getLogger(__name__)


def choice(what: str, known: tuple[str, ...]):
    """An argparse type accepting one of `known`; anything else is an error with the closest name."""
    def parse(text: str) -> str:
        if text not in known:
            raise argparse.ArgumentTypeError(str(unknown_name(what, text, known)))
        return text

    parse.__name__ = what  # argparse names the type in its messages
    return parse


def add_dataset_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", default="digits", type=choice("dataset", DATASETS), metavar="NAME",
                        help=f"one of {', '.join(DATASETS)} (default: digits, embedded)")
    parser.add_argument("--data-root", default="data", help="folder of downloaded datasets (default: data)")
    parser.add_argument("--download", action="store_true", help="download the dataset if missing")


def add_device_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto", help="torch device: auto (cuda when available), cpu, cuda:N")


def dataset_from_args(args: argparse.Namespace) -> Dataset:
    """The dataset the command line names, on its device; says so while it loads (torch first)."""
    log.info("loading torch and dataset %s …", args.dataset)
    started = time.perf_counter()
    from lowloss.data import load_dataset
    from lowloss.device import pick_device

    data = load_dataset(args.dataset, args.data_root, args.download, pick_device(args.device))
    log.info("loaded %s: %d train, %d test samples on %s (%.1f s)", data.name, len(data.y_train), len(data.y_test),
             data.x_train.device, time.perf_counter() - started)
    return data


def int_list(text: str) -> list[int]:
    """Parse '6144,2000' into [6144, 2000]."""
    try:
        return [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


ARCH_OPTION_FLAGS = {"width": "--width", "widths": "--widths", "channels": "--channels",
                     "width_multiplier": "--width-multiplier"}


def add_arch_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--arch", default="onehidden", type=choice("architecture", ARCHITECTURES), metavar="NAME",
                        help=f"one of {', '.join(ARCHITECTURES)} (default: onehidden)")
    parser.add_argument("--width", type=int, help="onehidden: hidden units (default 2000)")
    parser.add_argument("--widths", type=int_list, help="fc3: hidden widths, e.g. 6144,2000")
    parser.add_argument("--channels", type=int_list, help="conv2fc1: conv channels, e.g. 32,64")
    parser.add_argument("--width-multiplier", type=float, help="vgg16: scale every layer's width")


def arch_options_from_args(args: argparse.Namespace) -> dict:
    """The architecture options given on the command line; checked against the architecture later."""
    from lowloss.models import ARCHITECTURES as REGISTERED

    given = {key: getattr(args, key) for key in ARCH_OPTION_FLAGS if getattr(args, key) is not None}
    accepted = REGISTERED[args.arch].defaults if args.arch in REGISTERED else {}
    for key in given:
        if accepted and key not in accepted:
            raise LowlossError(f"{ARCH_OPTION_FLAGS[key]} does not apply to --arch {args.arch}")
    return given
