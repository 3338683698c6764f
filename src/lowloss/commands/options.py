"""Command-line options shared by several subcommands (dataset, device, architecture options)."""

from __future__ import annotations

import argparse

from lowloss.data import Dataset, load_dataset
from lowloss.device import pick_device
from lowloss.errors import LowlossError


def add_dataset_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", default="digits", help="dataset name (default: digits, embedded)")
    parser.add_argument("--data-root", default="data", help="folder of downloaded datasets (default: data)")
    parser.add_argument("--download", action="store_true", help="download the dataset if missing")


def add_device_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto", help="torch device: auto (cuda when available), cpu, cuda:N")


def dataset_from_args(args: argparse.Namespace) -> Dataset:
    return load_dataset(args.dataset, args.data_root, args.download, pick_device(args.device))


def int_list(text: str) -> list[int]:
    """Parse '6144,2000' into [6144, 2000]."""
    try:
        return [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


ARCH_OPTION_FLAGS = {"width": "--width", "widths": "--widths", "channels": "--channels",
                     "width_multiplier": "--width-multiplier"}


def add_arch_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--arch", default="onehidden", help="onehidden, fc3, conv2fc1 or vgg16")
    parser.add_argument("--width", type=int, help="onehidden: hidden units (default 2000)")
    parser.add_argument("--widths", type=int_list, help="fc3: hidden widths, e.g. 6144,2000")
    parser.add_argument("--channels", type=int_list, help="conv2fc1: conv channels, e.g. 32,64")
    parser.add_argument("--width-multiplier", type=float, help="vgg16: scale every layer's width")


def arch_options_from_args(args: argparse.Namespace) -> dict:
    """The architecture options given on the command line; checked against the architecture later."""
    from lowloss.models import ARCHITECTURES

    given = {key: getattr(args, key) for key in ARCH_OPTION_FLAGS if getattr(args, key) is not None}
    accepted = ARCHITECTURES[args.arch].defaults if args.arch in ARCHITECTURES else {}
    for key in given:
        if accepted and key not in accepted:
            raise LowlossError(f"{ARCH_OPTION_FLAGS[key]} does not apply to --arch {args.arch}")
    return given
