"""The data a method fits on and a path is evaluated on, from whatever the user has: a dataset's name, a lowloss
`Dataset`, a torch Dataset or DataLoader, or (x, y) tensors; read once into the in-memory `Dataset`."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from lowloss.errors import LowlossError
from lowloss.training.data import Dataset, Normalize, load_dataset
from lowloss.training.device import pick_device
from lowloss.training.user_data import UserSplit, user_dataset

DataInput = str | Dataset | UserSplit
"""Data given to the API: a named dataset (both splits), a lowloss `Dataset`, or one split of the user's."""


def labels_only(train: DataInput) -> bool:
    """Whether the data's classes are known only from its labels (the user's splits, not a dataset)."""
    return not isinstance(train, (str, Dataset))


def dataset_of(
    train: DataInput,
    test: UserSplit | None = None,
    *,
    device: str | torch.device = "auto",
    input_size: Sequence[int] | None = None,
    normalize: Normalize | None = None,
    data_root: str | Path = "data",
    download: bool = False,
    progress: bool = True,
) -> Dataset:
    """The data on `device` (auto: CUDA when available). A name loads that dataset (its own test split; at
    `input_size`, normalised by `normalize` when given); the user's splits are read as they are."""
    device = pick_device(device) if isinstance(device, str) else device
    if isinstance(train, str):
        if test is not None:
            raise LowlossError(f"dataset {train!r} brings its own test split; pass test=None")
        shape = None if input_size is None else tuple(input_size)
        return load_dataset(train, data_root, download, device, shape, normalize)
    if input_size is not None or normalize is not None:
        raise LowlossError("input_size and normalize apply to a named dataset; transform your own data yourself")
    if isinstance(train, Dataset):
        if test is not None:
            raise LowlossError(f"dataset {train.name!r} brings its own test split; pass test=None")
        return train.to(device)
    return user_dataset(train, test, progress=progress).to(device)
