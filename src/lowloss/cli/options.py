"""Command-line options shared by several subcommands (dataset, device, architecture options, the user's own
models and data), and the checks of every numeric option: a bad number is refused while the arguments are
parsed, as one `lowloss: error:` line, before anything is read or written (`--epochs 0` never replaces a
model). Parsers are built without importing torch (names come from the torch-free tables of architectures and
datasets, references are parsed as text); the models, the data and the device are loaded only when a command
runs.
"""

from __future__ import annotations

import argparse
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from lowloss.errors import LowlossError, unknown_name
from lowloss.evaluate.adaptive import AUTO
from lowloss.nets.architectures import ARCHITECTURES, NORMS
from lowloss.nets.references import FORMS, ModelRef, parse_input_size, parse_model_args, parse_reference
from lowloss.training.datasets import DATASETS

if TYPE_CHECKING:
    from torch import nn

    from lowloss.api.models import Endpoints
    from lowloss.methods.context import Options
    from lowloss.training.data import Dataset, Normalize

log = logging.getLogger(__name__)
T = TypeVar("T")


def choice(what: str, known: tuple[str, ...]):
    """An argparse type accepting one of `known`; anything else is an error with the closest name."""

    def parse(text: str) -> str:
        if text not in known:
            raise argparse.ArgumentTypeError(str(unknown_name(what, text, known)))
        return text

    parse.__name__ = what  # argparse names the type in its messages
    return parse


def add_dataset_options(parser: argparse.ArgumentParser, user_data: bool = False) -> None:
    """`--dataset` and where it lives; with `user_data`, an image folder instead, and the input size and
    normalisation the user's networks take."""
    source = parser.add_mutually_exclusive_group() if user_data else parser
    source.add_argument(
        "--dataset",
        default="digits",
        type=choice("dataset", tuple(DATASETS)),
        metavar="NAME",
        help=f"one of {', '.join(DATASETS)} (default: digits, embedded)",
    )
    parser.add_argument("--data-root", default="data", help="folder of downloaded datasets (default: data)")
    parser.add_argument("--download", action="store_true", help="download the dataset if missing")
    if not user_data:
        return
    source.add_argument(
        "--image-folder",
        type=Path,
        metavar="DIR",
        help="the user's images instead of --dataset: DIR/train and DIR/test, one subfolder per class "
        "(torchvision's ImageFolder)",
    )
    parser.add_argument(
        "--input-size",
        type=argument_type(parse_input_size),
        metavar="C,H,W",
        help="the input size of the networks: images are resized to it (a grey channel repeated); default: the "
        "dataset's own, or a timm model's pretrained config for an image folder",
    )
    parser.add_argument(
        "--normalize",
        type=normalization,
        metavar="MEAN,STD",
        help="normalise images in [0, 1] as (x - MEAN) / STD: two numbers for every channel, or C means then C "
        "deviations; default: standardised with the training split's statistics (an image folder of a timm "
        "model: its pretrained config's)",
    )


ENDPOINT_HELP = "a trained model (.safetensors), or with --model a checkpoint of it"


def add_model_options(parser: argparse.ArgumentParser) -> None:
    """`--model` and its arguments: the network of the user's own checkpoints."""
    group = parser.add_argument_group("the user's own models (instead of files from `lowloss train`)")
    group.add_argument(
        "--model",
        type=argument_type(parse_reference),
        metavar="REF",
        help=f"the network the files are checkpoints of: {FORMS}; the files are then state dicts "
        f"(.safetensors, or .pt/.pth/.bin/.ckpt read with torch.load(weights_only=True))",
    )
    group.add_argument(
        "--model-args",
        type=argument_type(parse_model_args),
        metavar="K=V,…",
        help="arguments the model is built with, e.g. num_classes=10,width=32 (JSON or Python literals)",
    )
    group.add_argument(
        "--freeze",
        action="append",
        metavar="MODULE",
        help="a module whose units stay in place when the spec is inferred (repeatable)",
    )


def model_ref_from_args(args: argparse.Namespace) -> ModelRef | None:
    """The `--model` reference with its arguments, None for lowloss model files."""
    if args.model is None:
        if args.model_args is not None or args.freeze is not None:
            raise LowlossError("--model-args and --freeze describe a --model; lowloss model files record their own")
        return None
    return ModelRef(args.model, args.model_args or {}, tuple(args.freeze or ()))


def endpoints_from_args(args: argparse.Namespace, paths: list[Path], what: str = "endpoints") -> Endpoints:
    """The models the command line names (`what` they are, for messages): lowloss model files, or with `--model`
    the user's checkpoints."""
    from lowloss.api.models import checkpoints, model_files

    reference = model_ref_from_args(args)
    return model_files(paths, what) if reference is None else checkpoints(paths, reference)


def endpoints_and_data(
    args: argparse.Namespace, paths: list[Path], what: str = "endpoints"
) -> tuple[Endpoints, Dataset]:
    """The models the command line names and its data, checked against each other (`lowloss.api.models.for_data`);
    the models are read first, so that a file's mistake is told before the data load."""
    from lowloss.api.models import for_data

    endpoints = endpoints_from_args(args, paths, what)
    return for_data(endpoints, dataset_from_args(args, endpoints.model))


def options_from_args(args: argparse.Namespace) -> Options:
    """The method options the command line gives; those a command does not take keep their defaults."""
    from dataclasses import fields

    from lowloss.methods.context import Options

    given = {field.name: getattr(args, field.name) for field in fields(Options) if hasattr(args, field.name)}
    return Options(**given, progress=not args.no_progress)


def argument_type(parse: Callable[[str], T]) -> Callable[[str], T]:
    """An argparse type from a parser that raises LowlossError (argparse then names the option)."""

    def parsed(text: str) -> T:
        try:
            return parse(text)
        except LowlossError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    parsed.__name__ = parse.__name__
    return parsed


def normalization(text: str) -> Normalize:
    """argparse type of `--normalize`: `MEAN,STD` for every channel, or C means then C deviations (each > 0)."""
    values = [_float(part) for part in text.split(",")]
    if len(values) % 2:
        raise argparse.ArgumentTypeError(f"expected MEAN,STD or C means then C deviations, got {len(values)} numbers")
    means, stds = tuple(values[: len(values) // 2]), tuple(values[len(values) // 2 :])
    if min(stds) <= 0:
        raise argparse.ArgumentTypeError(f"deviations must be greater than 0, got {text}")
    return means, stds


def add_device_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto", help="torch device: auto (cuda when available), cpu, cuda:N")


def dataset_from_args(args: argparse.Namespace, model: nn.Module | None = None) -> Dataset:
    """The dataset the command line names (or its image folder), on its device; says so while it loads (torch
    first). An image folder for a timm `model` takes what the user leaves out from its pretrained config."""
    folder = getattr(args, "image_folder", None)
    log.info("loading torch and dataset %s …", args.dataset if folder is None else folder)
    started = time.perf_counter()
    from lowloss.training.data import load_dataset
    from lowloss.training.device import pick_device

    input_size, normalize = getattr(args, "input_size", None), getattr(args, "normalize", None)
    if folder is None:
        device = pick_device(args.device)
        data = load_dataset(args.dataset, args.data_root, args.download, device, input_size, normalize)
    else:
        from lowloss.nets.external import timm_data_config
        from lowloss.training.user_data import image_folder

        pretrained = timm_data_config(model) if model is not None else None
        if pretrained is not None:
            input_size = input_size or pretrained["input_size"]
            normalize = normalize or (pretrained["mean"], pretrained["std"])
        progress = not getattr(args, "no_progress", False)
        data = image_folder(folder, input_size, normalize, progress).to(pick_device(args.device))
    log.info(
        "loaded %s: %d train, %d test samples on %s (%.1f s)",
        data.name,
        len(data.y_train),
        len(data.y_test),
        data.x_train.device,
        time.perf_counter() - started,
    )
    return data


MAX_POINTS = 1000
"""Upper bound of `connect --points`: every point is one evaluation of the network on both splits,
per leg (the default is 21; 1000 already costs ~50 times as much)."""
BN_BATCHES_HELP = (
    "recompute BatchNorm's running statistics at every point from N fixed training batches of 128 "
    "(networks with BatchNorm only); the route methods fit on points so measured"
)


def count(minimum: int = 1, maximum: int | None = None):
    """argparse type: an integer in [minimum, maximum] (epochs, widths, batch sizes, steps, points)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        return _in_range(value, minimum, maximum)

    return parse


def points_per_leg(text: str) -> int | str:
    """argparse type of `--points`: evenly spaced t per leg (1 … MAX_POINTS), or `auto`, the adaptive grid."""
    if text == AUTO:
        return AUTO
    try:
        return _in_range(int(text), 1, MAX_POINTS)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer or {AUTO!r}, got {text!r}") from None


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0 (learning rates, width multipliers)."""
    value = _float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be greater than 0, got {text}")
    return value


def non_negative_float(text: str) -> float:
    """argparse type: a finite number >= 0 (weight decay)."""
    value = _float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be at least 0, got {text}")
    return value


def int_list(text: str) -> list[int]:
    """Parse '6144,2000' into [6144, 2000]; every entry is a width, so at least 1."""
    try:
        values = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    return [_in_range(value, 1, None) for value in values]


def _in_range(value: int, minimum: int, maximum: int | None) -> int:
    if value < minimum:
        raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise argparse.ArgumentTypeError(f"must be at most {maximum}, got {value}")
    return value


def _float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
    return value


ARCH_OPTION_FLAGS = {
    "width": "--width",
    "widths": "--widths",
    "channels": "--channels",
    "width_multiplier": "--width-multiplier",
    "norm": "--norm",
}


def add_arch_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--arch",
        default="onehidden",
        type=choice("architecture", tuple(ARCHITECTURES)),
        metavar="NAME",
        help=f"one of {', '.join(ARCHITECTURES)} (default: onehidden)",
    )
    parser.add_argument("--width", type=count(1), help="onehidden: hidden units (default 2000)")
    parser.add_argument("--widths", type=int_list, help="fc3: hidden widths, e.g. 6144,2000")
    parser.add_argument("--channels", type=int_list, help="conv2fc1: conv channels, e.g. 32,64")
    parser.add_argument("--width-multiplier", type=positive_float, help="vgg16, resnet20: scale every layer's width")
    parser.add_argument(
        "--norm",
        type=choice("norm", NORMS),
        metavar="KIND",
        help=f"resnet20: normalisation layers, one of {', '.join(NORMS)} (default batch)",
    )


def arch_options_from_args(args: argparse.Namespace) -> dict:
    """The architecture options given on the command line; checked against the architecture later."""
    given = {key: getattr(args, key) for key in ARCH_OPTION_FLAGS if getattr(args, key) is not None}
    accepted = ARCHITECTURES[args.arch].options if args.arch in ARCHITECTURES else {}
    for key in given:
        if accepted and key not in accepted:
            raise LowlossError(f"{ARCH_OPTION_FLAGS[key]} does not apply to --arch {args.arch}")
    return given
