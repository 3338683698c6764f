"""The user's own data as a lowloss dataset: a torch Dataset or DataLoader, (x, y) tensors, or an image folder.

Whatever the form, it is read once into the in-memory `Dataset` every method and the evaluation use (the
whole split on the device, as the named datasets are). A Dataset or DataLoader brings its own transforms; an
image folder (torchvision's `ImageFolder`, `DIR/train` and `DIR/test`, one subfolder per class) is resized
and normalised as the user says, else standardised per channel with its training split's statistics.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from torch.utils.data import Dataset as TorchDataset
from tqdm.auto import tqdm

from lowloss.errors import LowlossError
from lowloss.training.data import Dataset, Normalize, normalised_splits

READ_BATCH = 256
"""Samples read at a time from a torch Dataset."""
SPLIT_FOLDERS = ("train", "test")

UserSplit = TorchDataset | DataLoader | tuple[torch.Tensor, torch.Tensor]
"""One split of the user's data: a torch Dataset or DataLoader yielding (input, label), or (x, y) tensors."""


def split_tensors(split: UserSplit, what: str, progress: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """(x, y) of one split: inputs as float32 (N, …), labels as int64 (N,), read in one pass."""
    if isinstance(split, (tuple, list)):
        if len(split) != 2 or not all(isinstance(part, torch.Tensor) for part in split):
            raise LowlossError(f"{what}: expected (x, y) tensors, a torch Dataset or a DataLoader")
        return _checked(*split, what)
    if isinstance(split, TorchDataset):
        split = DataLoader(split, batch_size=READ_BATCH)
    if not isinstance(split, DataLoader):
        raise LowlossError(f"{what}: a {type(split).__name__}; expected a torch Dataset, DataLoader or (x, y) tensors")
    try:
        x, y = _read(split, what, progress)
    except RuntimeError as exc:  # batching or concatenating inputs of different sizes
        reason = " ".join(str(exc).split())
        raise LowlossError(f"{what}: inputs differ in size ({reason}); resize them to one input size") from None
    return _checked(x, y, what)


def _read(loader: DataLoader, what: str, progress: bool) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = [], []
    for batch in tqdm(loader, desc=f"reading {what}", unit="batch", disable=not progress):
        if not isinstance(batch, (tuple, list)) or len(batch) != 2:
            raise LowlossError(f"{what}: yields {type(batch).__name__}s; expected (input, label) pairs")
        xs.append(torch.as_tensor(batch[0]))
        ys.append(torch.as_tensor(batch[1]))
    if not xs:
        raise LowlossError(f"{what}: holds no samples")
    return torch.cat(xs), torch.cat(ys)


def _checked(x: torch.Tensor, y: torch.Tensor, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    if x.dim() < 2 or y.dim() != 1 or len(x) != len(y):
        raise LowlossError(f"{what}: inputs {tuple(x.shape)} and labels {tuple(y.shape)} are not N inputs and N labels")
    if y.is_floating_point() or y.is_complex() or (len(y) and y.min() < 0):
        raise LowlossError(f"{what}: labels must be class indices (integers from 0)")
    if not x.is_floating_point() or not torch.isfinite(x).all():
        raise LowlossError(f"{what}: inputs must be finite floating-point numbers")
    return x.detach().to("cpu", torch.float32).contiguous(), y.detach().to("cpu", torch.int64)


def user_dataset(
    train: UserSplit,
    test: UserSplit | None = None,
    name: str = "user data",
    num_classes: int | None = None,
    progress: bool = True,
) -> Dataset:
    """The user's splits as one dataset (no test split: an empty one). Classes: `num_classes`, else one more
    than the largest label."""
    x_train, y_train = split_tensors(train, f"{name} (train)", progress)
    if test is None:
        x_test, y_test = x_train[:0], y_train[:0]
    else:
        x_test, y_test = split_tensors(test, f"{name} (test)", progress)
    if x_test.shape[1:] != x_train.shape[1:]:
        shapes = tuple(x_test.shape[1:]), tuple(x_train.shape[1:])
        raise LowlossError(f"{name}: test inputs {shapes[0]} differ from the training inputs {shapes[1]}")
    largest = int(torch.cat([y_train, y_test]).max()) + 1
    if num_classes is not None and largest > num_classes:
        raise LowlossError(f"{name}: label {largest - 1} is out of range for {num_classes} classes")
    return Dataset(name, x_train, y_train, x_test, y_test, num_classes or largest)


def image_folder(
    root: str | os.PathLike,
    input_shape: Sequence[int] | None = None,
    normalize: Normalize | None = None,
    progress: bool = True,
) -> Dataset:
    """`root/train` and `root/test` read by torchvision's ImageFolder, at `input_shape` (C, H, W; default: the
    images' own size, which must then be one) and normalised by `normalize` (default: standardised per channel
    with the training split's statistics)."""
    from torchvision import datasets, transforms

    root = Path(root)
    steps = []
    if input_shape is not None:
        channels, height, width = input_shape
        steps += [transforms.Grayscale(channels)] if channels in (1, 3) else []
        steps.append(transforms.Resize((height, width)))
    steps.append(transforms.ToTensor())
    splits = {}
    for split in SPLIT_FOLDERS:
        folder = root / split
        if not folder.is_dir():
            raise LowlossError(f"{root}: no folder {split}/ (an image folder holds train/ and test/, by class)")
        try:
            splits[split] = datasets.ImageFolder(str(folder), transform=transforms.Compose(steps))
        except (FileNotFoundError, OSError) as exc:
            raise LowlossError(f"{folder}: {exc}") from None
    if splits["train"].classes != splits["test"].classes:
        raise LowlossError(
            f"{root}: train/ and test/ hold different classes ({splits['train'].classes} and {splits['test'].classes})"
        )
    data = user_dataset(splits["train"], splits["test"], str(root), len(splits["train"].classes), progress)
    if input_shape is not None and tuple(data.input_shape) != tuple(input_shape):
        raise LowlossError(f"{root}: images have {data.input_shape[0]} channels, not {input_shape[0]}")
    x_train, x_test = normalised_splits(data.x_train, data.x_test, normalize)
    return Dataset(data.name, x_train, data.y_train, x_test, data.y_test, data.num_classes)
