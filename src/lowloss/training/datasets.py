"""The named datasets, as one table that imports no torch.

Everything that names a dataset reads this table: the command line (`--dataset`), the workflow (which
datasets need no download), the tracking (where a dataset's files lie) and `load_dataset`. A dataset is
embedded (shipped with a dependency or generated: it needs no download), or one of torchvision's, read
from its folder under the data root.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from lowloss.errors import LowlossError


@dataclass(frozen=True)
class DatasetSource:
    """Where a dataset comes from: `torchvision` names its torchvision class and `folder` where torchvision
    keeps it under the data root; `synthetic` is the image shape of a generated one; `augment` turns on
    CIFAR's crops and flips in training."""

    torchvision: str | None = None
    folder: str | None = None
    synthetic: tuple[int, int, int] | None = None
    augment: bool = False

    @property
    def embedded(self) -> bool:
        """Needs no download: scikit-learn's digits, or generated."""
        return self.torchvision is None


DATASETS: dict[str, DatasetSource] = {
    "digits": DatasetSource(),
    "mnist": DatasetSource("MNIST", "MNIST"),
    "fashion-mnist": DatasetSource("FashionMNIST", "FashionMNIST"),
    "cifar10": DatasetSource("CIFAR10", "cifar-10-batches-py", augment=True),
    "synthetic-mnist": DatasetSource(synthetic=(1, 28, 28)),
    "synthetic-cifar": DatasetSource(synthetic=(3, 32, 32)),
}
"""`digits` (scikit-learn's embedded 8x8 digits) is the default; the synthetic sets are tiny, for tests."""


def digits_file() -> Path:
    """The file of scikit-learn's digits (64 pixels and the label per row, what its `load_digits` reads),
    found without importing scikit-learn, whose import costs seconds in every workflow job."""
    package = importlib.util.find_spec("sklearn")
    if package is None or not package.submodule_search_locations:
        raise LowlossError("dataset 'digits' needs scikit-learn (pip install scikit-learn)")
    return Path(package.submodule_search_locations[0], "datasets", "data", "digits.csv.gz")
