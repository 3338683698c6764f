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

from lowloss.errors import LowlossError, shortened, unknown_name
from lowloss.evaluate.adaptive import AUTO
from lowloss.methods.context import ALL, MAX_SWEEPS, OT_SOLVERS
from lowloss.nets.architectures import ARCHITECTURES, NORMS
from lowloss.nets.references import (
    FORMS,
    MAX_INPUT_CHANNELS,
    MAX_INPUT_SIDE,
    ModelRef,
    parse_input_size,
    parse_model_args,
    parse_reference,
)
from lowloss.storage.file_kinds import MODEL, require_not_checkpoint
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
        type=input_size,
        metavar="C,H,W",
        help=f"the input size of the networks: images are resized to it (a grey channel repeated); default: the "
        f"dataset's own, or a timm model's pretrained config for an image folder ({INPUT_SIZE_RANGE})",
    )
    parser.add_argument(
        "--normalize",
        type=normalization,
        metavar="MEAN,STD",
        help="normalise images in [0, 1] as (x - MEAN) / STD: two numbers for every channel, or C means then C "
        "deviations (means in [0, 1], deviations in (0, 1]); default: standardised with the training split's "
        "statistics (an image folder of a timm model: its pretrained config's)",
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


def model_inputs(args: argparse.Namespace, paths: list[Path]) -> dict[Path, str | None]:
    """The files the command line names as models, each with the kind `check_files` expects of it: lowloss model
    files, or with `--model` the user's checkpoints (no lowloss kind; their tensors are checked when read)."""
    if model_ref_from_args(args) is not None:
        return dict.fromkeys(paths, None)
    for path in paths:
        require_not_checkpoint(path)
    return dict.fromkeys(paths, MODEL)


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
    """The method options the command line gives; those it leaves out or a command does not take keep their
    defaults."""
    from dataclasses import fields

    from lowloss.methods.context import Options

    names = tuple(field.name for field in fields(Options))
    stated = {name: getattr(args, name) for name in names if getattr(args, name, None) is not None}
    return Options(**stated, progress=not args.no_progress)


def argument_type(parse: Callable[[str], T]) -> Callable[[str], T]:
    """An argparse type from a parser that raises LowlossError (argparse then names the option)."""

    def parsed(text: str) -> T:
        try:
            return parse(text)
        except LowlossError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    parsed.__name__ = parse.__name__
    return parsed


input_size = argument_type(parse_input_size)
"""argparse type of `--input-size`: C,H,W in the ranges of `lowloss.nets.references.parse_input_size`."""
INPUT_SIZE_RANGE = f"at most {MAX_INPUT_CHANNELS} channels and {MAX_INPUT_SIDE} pixels a side"


def normalization(text: str) -> Normalize:
    """argparse type of `--normalize`: `MEAN,STD` for every channel, or C means then C deviations. Images are
    normalised from [0, 1], so a mean lies in [0, 1] and a deviation in (0, 1] (1: no scaling)."""
    values = [_float(part) for part in text.split(",")]
    if len(values) % 2:
        raise argparse.ArgumentTypeError(f"expected MEAN,STD or C means then C deviations, got {len(values)} numbers")
    means, stds = tuple(values[: len(values) // 2]), tuple(values[len(values) // 2 :])
    if not all(0 < std <= 1 for std in stds):
        raise argparse.ArgumentTypeError(f"deviations must be greater than 0 and at most 1, got {_shown(text)}")
    if not all(0 <= mean <= 1 for mean in means):
        raise argparse.ArgumentTypeError(f"means must lie in [0, 1] (images are in [0, 1]), got {_shown(text)}")
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


# The range of every numeric option. A value outside it is refused while the arguments are parsed; each bound
# says why it lies where it does (far beyond any useful setting, well before one that cannot run).
MAX_SEED = 2**32 - 1
"""Seeds lie in [0, 2^32 − 1], NumPy's range: the per-epoch and per-step seeds drawn from one
(seed · 1000003 + epoch · 101 + salt) then stay far inside the 64-bit range torch's generators accept."""
MAX_EPOCHS = 10_000
"""50 times the paper's longest budget (200 epochs of curve fitting on CIFAR-10)."""
MAX_STEPS = 1_000_000
"""Optimiser steps of a connector: 1000 times the default."""
MAX_BATCH = 65_536
"""Training samples in a batch, or fitted on (--wa-samples): more than the largest training split (60000,
MNIST and Fashion-MNIST), so every meaningful value is allowed and the whole split is one batch."""
MAX_BATCHES = 1000
"""Batches of 128 that BatchNorm's or REPAIR's statistics are measured on: 128000 samples, twice the largest
training split."""
MAX_WIDTH = 65_536
"""Units of a dense hidden layer: ten times the paper's widest (6144); a one-hidden-layer network that wide
already has 200 million parameters on CIFAR-10's inputs, and every evaluated point of a path is a copy."""
MAX_CHANNELS = 4096
"""Channels of a conv layer: eight times VGG's widest (512); a 3x3 conv that wide has 150 million weights."""
MAX_WIDTH_MULTIPLIER = 8.0
"""The factor on vgg16's and resnet20's widths that reaches MAX_CHANNELS (8 x 512)."""
MAX_LR = 10.0
"""A learning rate above 10 diverges at once with SGD and Adam on every network here (the defaults are
0.01 to 0.1)."""
MAX_WEIGHT_DECAY = 1.0
"""At weight decay 1 a step of learning rate 1 removes the whole weight; more only flips signs."""
MAX_POINTS = 1000
"""Upper bound of `connect --points`: every point is one evaluation of the network on both splits,
per leg (the default is 21; 1000 already costs ~50 times as much). `--wa-breakpoints` shares it: more
re-fits per stage than evaluated points would re-fit between points that are never evaluated."""
MAX_FLOW_LAYERS = 64
"""Coupling or autoregressive layers of a connector ν (the default is 6)."""
MAX_FLOW_HIDDEN = 4096
"""Hidden width of ν's conditioners (the default is 128)."""
MAX_WA_LAYER = 1000
"""WA(n) of an ensemble: n counts weight layers from the last; the members' own network (a built-in architecture
has at most 22, a torchvision or timm model a few hundred) is checked once they are read."""
BN_BATCHES_HELP = (
    "recompute BatchNorm's running statistics at every point from N fixed training batches of 128 "
    "(networks with BatchNorm only); the route methods fit on points so measured"
)


def add_training_options(
    parser: argparse.ArgumentParser,
    epochs: int | None,
    epochs_help: str,
    weight_decay_help: str | None = None,
    min_epochs: int = 1,
) -> None:
    """Seed, epochs, learning rate, batch size and weight decay of SGD training (`train`, `fit-curve`)."""
    from lowloss.training.config import TrainConfig

    add_seed_option(parser, "seed of the initialisation, the shuffles and every other random choice", TrainConfig.seed)
    parser.add_argument(
        "--epochs",
        type=count(min_epochs, MAX_EPOCHS),
        default=epochs,
        help=f"{epochs_help} ({min_epochs} to {MAX_EPOCHS})",
    )
    parser.add_argument(
        "--lr", type=positive_float(MAX_LR), default=TrainConfig.lr, help=f"initial learning rate (0 < lr ≤ {MAX_LR:g})"
    )
    parser.add_argument(
        "--batch-size", type=count(1, MAX_BATCH), default=TrainConfig.batch_size, help=f"minibatch (1 to {MAX_BATCH})"
    )
    parser.add_argument(
        "--weight-decay",
        type=non_negative_float(MAX_WEIGHT_DECAY),
        default=TrainConfig.weight_decay,
        help=f"{weight_decay_help or 'L2 weight decay'} (0 to {MAX_WEIGHT_DECAY:g})",
    )


def add_count_option(
    parser: argparse.ArgumentParser,
    flag: str,
    maximum: int,
    help: str,
    default: int | None = None,
    metavar: str | None = None,
) -> None:
    """An integer option in [1, maximum], its help ending with its default and its bound."""
    shown = f"default {default}, at most {maximum}" if default is not None else f"at most {maximum}"
    parser.add_argument(flag, type=count(1, maximum), default=default, metavar=metavar, help=f"{help} ({shown})")


def scoped(help: str, applies_to: str | None) -> str:
    """An option's help, prefixed with what it applies to when the command has more than that."""
    return help if applies_to is None else f"{applies_to}: {help}"


def add_wa_samples_option(parser: argparse.ArgumentParser, applies_to: str) -> None:
    """`--wa-samples`: the training samples weight adjustment fits on (None: the whole training split)."""
    help = scoped("training samples the weight adjustments are fitted on; default the whole training split", applies_to)
    add_count_option(parser, "--wa-samples", MAX_BATCH, help, metavar="N")


def add_bn_batches_option(parser: argparse.ArgumentParser, applies_to: str | None = None) -> None:
    """`--bn-batches`: BatchNorm statistics measured at every point (None: points keep the ones they carry)."""
    add_count_option(parser, "--bn-batches", MAX_BATCHES, scoped(BN_BATCHES_HELP, applies_to), metavar="N")


def add_ot_solver_option(parser: argparse.ArgumentParser, applies_to: str | None = None) -> None:
    """`--ot-solver`: POT's exact solver (the paper's) or SciPy's, which finds the same matching faster."""
    help = scoped("OT solver (default emd, as the paper)", applies_to)
    parser.add_argument("--ot-solver", choices=OT_SOLVERS, default="emd", help=help)


def add_wm_sweeps_option(parser: argparse.ArgumentParser) -> None:
    """`--wm-sweeps`: a budget of coordinate-descent sweeps for weight matching (None: to its fixed point)."""
    parser.add_argument(
        "--wm-sweeps",
        type=count(0, MAX_SWEEPS),
        metavar="N",
        help=f"weight-matching: stop its coordinate descent after N sweeps, 0 for the aligned start alone (0 to "
        f"{MAX_SWEEPS}; default: at its fixed point)",
    )


def add_seed_option(parser: argparse.ArgumentParser, help: str, default: int = 0) -> None:
    parser.add_argument("--seed", type=seed, default=default, help=f"{help} (0 to 2^32 - 1, default {default})")


def given(args: argparse.Namespace, names: tuple[str, ...]) -> list[str]:
    """Which of the options `names` the command line gave (not left at None or False; a 0 counts as given)."""
    return [name for name in names if getattr(args, name, None) is not None and getattr(args, name) is not False]


def count(minimum: int = 1, maximum: int | None = None):
    """argparse type: an integer in [minimum, maximum] (epochs, widths, batch sizes, steps, points)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {_shown(text)}") from None
        return _in_range(value, minimum, maximum)

    parse.__name__ = "integer"
    return parse


def seed(text: str) -> int:
    """argparse type: a seed in [0, MAX_SEED]."""
    return count(0, MAX_SEED)(text)


def points_per_leg(text: str) -> int | str:
    """argparse type of `--points`: evenly spaced t per leg (1 … MAX_POINTS), or `auto`, the adaptive grid."""
    if text == AUTO:
        return AUTO
    try:
        return _in_range(int(text), 1, MAX_POINTS)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer or {AUTO!r}, got {_shown(text)}") from None


def positive_float(maximum: float):
    """argparse type: a finite number in (0, maximum] (learning rates, width multipliers)."""
    return bounded_float(maximum, zero_allowed=False)


def non_negative_float(maximum: float):
    """argparse type: a finite number in [0, maximum] (weight decay)."""
    return bounded_float(maximum, zero_allowed=True)


def bounded_float(maximum: float, zero_allowed: bool):
    """argparse type: a finite number up to `maximum`, above 0 (or from 0 when `zero_allowed`)."""
    lowest = "at least 0" if zero_allowed else "greater than 0"

    def parse(text: str) -> float:
        value = _float(text)
        if not (0 <= value if zero_allowed else 0 < value) or value > maximum:
            raise argparse.ArgumentTypeError(f"must be {lowest} and at most {maximum:g}, got {text}")
        return value

    parse.__name__ = "number"
    return parse


def int_list(maximum: int):
    """argparse type: '6144,2000' -> [6144, 2000]; every entry is a width in [1, maximum]."""

    def parse(text: str) -> list[int]:
        try:
            values = [int(part) for part in text.split(",")]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {_shown(text)}") from None
        return [_in_range(value, 1, maximum) for value in values]

    parse.__name__ = "list"
    return parse


def wa_breakpoints(text: str) -> int | str:
    """argparse type of `--wa-breakpoints`: 'all', or an integer K in [2, MAX_POINTS]."""
    return ALL if text == ALL else count(2, MAX_POINTS)(text)


def method_name(text: str) -> str:
    """argparse type: a method of the method table, or its REPAIR variant (the closest name suggested)."""
    from lowloss.methods.registry import get_method

    try:
        return get_method(text).name
    except LowlossError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def output_path(text: str) -> Path:
    """argparse type of a file or folder a command writes: any name but the empty one (which would be `.`)."""
    if not text.strip():
        raise argparse.ArgumentTypeError(f"{text!r} names no file")
    return Path(text)


def _in_range(value: int, minimum: int, maximum: int | None) -> int:
    if value < minimum:
        raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {_shown(str(value), quote=False)}")
    if maximum is not None and value > maximum:
        raise argparse.ArgumentTypeError(f"must be at most {maximum}, got {_shown(str(value), quote=False)}")
    return value


def _float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {_shown(text)}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {_shown(text)}")
    return value


def _shown(text: str, quote: bool = True) -> str:
    """A value as a message quotes it: a number of 5000 digits is cut."""
    shown = shortened(text, 40)
    return repr(shown) if quote else shown


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
    parser.add_argument(
        "--width", type=count(1, MAX_WIDTH), help=f"onehidden: hidden units (default 2000, at most {MAX_WIDTH})"
    )
    parser.add_argument(
        "--widths", type=int_list(MAX_WIDTH), help=f"fc3: hidden widths, e.g. 6144,2000 (each at most {MAX_WIDTH})"
    )
    parser.add_argument(
        "--channels",
        type=int_list(MAX_CHANNELS),
        help=f"conv2fc1: conv channels, e.g. 32,64 (each at most {MAX_CHANNELS})",
    )
    parser.add_argument(
        "--width-multiplier",
        type=positive_float(MAX_WIDTH_MULTIPLIER),
        help=f"vgg16, resnet20: scale every layer's width (greater than 0, at most {MAX_WIDTH_MULTIPLIER:g})",
    )
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
