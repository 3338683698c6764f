"""Datasets as four tensors that live on the device as a whole.

The names and sources are the table of `lowloss.training.datasets`. `digits` (scikit-learn's embedded 8x8
digits) needs no download and is the default. `mnist`, `fashion-mnist` and `cifar10` go through
torchvision with an explicit `download` switch; `fashion-mnist` is also read from Debian's
`dataset-fashion-mnist` files when they are installed. `synthetic-mnist` and `synthetic-cifar` are
generated, learnable and tiny, for fast tests.

Images are standardised per channel with the training split's statistics, unless the user gives the mean
and deviation their networks were trained with (`Normalize`); they may also be resized (and a grey channel
repeated) to the input size a user's network takes.
"""

from __future__ import annotations

import gzip
import logging
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from lowloss.errors import LowlossError, unknown_name
from lowloss.storage.atomic import write_atomic
from lowloss.storage.weights import Artifact
from lowloss.training.datasets import DATASETS, DatasetSource, digits_file

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
DIGITS_TEST_FRACTION = 0.25
CIFAR_PAD = 4
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Dataset:
    """A classification dataset held as tensors: x is float (N, C, H, W), y is int64 (N,)."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    augment: bool = False

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    def split(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(x, y) of the `train` or `test` split."""
        if name not in ("train", "test"):
            raise LowlossError(f"unknown split {name!r} (expected train or test)")
        return (self.x_train, self.y_train) if name == "train" else (self.x_test, self.y_test)

    def to(self, device: torch.device | str) -> Dataset:
        return replace(
            self,
            x_train=self.x_train.to(device),
            y_train=self.y_train.to(device),
            x_test=self.x_test.to(device),
            y_test=self.y_test.to(device),
        )


Normalize = tuple[float | Sequence[float], float | Sequence[float]]
"""(mean, deviation) that images in [0, 1] are normalised with, x ↦ (x − mean) / deviation: one number for every
channel, or one per channel."""
Splits = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]
"""x_train, y_train, x_test, y_test: images in [0, 1] (N, C, H, W) and their labels, as read."""


def _standardise(x_train: torch.Tensor, x_test: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel standardisation with the training split's statistics."""
    dims = (0, 2, 3)
    mean = x_train.mean(dim=dims, keepdim=True)
    std = x_train.std(dim=dims, keepdim=True).clamp_min(1e-6)
    return (x_train - mean) / std, (x_test - mean) / std


def normalised(x: torch.Tensor, normalize: Normalize) -> torch.Tensor:
    """`x` (N, C, H, W) normalised per channel; one mean and deviation serve every channel."""
    mean, std = (torch.as_tensor(values, dtype=x.dtype).expand(x.shape[1])[:, None, None] for values in normalize)
    return (x - mean) / std


def normalised_splits(
    x_train: torch.Tensor, x_test: torch.Tensor, normalize: Normalize | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Both splits normalised by `normalize`, or (None) standardised per channel with the training split's
    statistics."""
    if normalize is None:
        return _standardise(x_train, x_test)
    return normalised(x_train, normalize), normalised(x_test, normalize)


def resized(x: torch.Tensor, input_shape: tuple[int, ...], name: str) -> torch.Tensor:
    """Images (N, C, H, W) at `input_shape` (C', H', W'): a grey channel repeated C' times, the positions resampled
    bilinearly (antialiased when shrinking)."""
    channels, *size = input_shape
    if x.shape[1] != channels:
        if x.shape[1] != 1:
            raise LowlossError(f"dataset {name!r} has {x.shape[1]} channels; they cannot become {channels}")
        x = x.expand(-1, channels, -1, -1)
    if list(x.shape[2:]) != size:
        x = F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False, antialias=True)
    return x.contiguous()


def _from_arrays(
    name: str,
    splits: Splits,
    num_classes: int,
    augment: bool = False,
    input_shape: tuple[int, ...] | None = None,
    normalize: Normalize | None = None,
) -> Dataset:
    x_train, y_train, x_test, y_test = splits
    x_train, x_test = (torch.as_tensor(np.asarray(x), dtype=torch.float32) for x in (x_train, x_test))
    if input_shape is not None:
        x_train, x_test = (resized(x, tuple(input_shape), name) for x in (x_train, x_test))
    x_train, x_test = normalised_splits(x_train, x_test, normalize)
    return Dataset(
        name,
        x_train.contiguous(),
        torch.as_tensor(np.asarray(y_train), dtype=torch.int64),
        x_test.contiguous(),
        torch.as_tensor(np.asarray(y_test), dtype=torch.int64),
        num_classes,
        augment,
    )


def _digits() -> Splits:
    """scikit-learn's digits, read from the file it ships (a test checks the arrays against `load_digits`)."""
    table = np.loadtxt(digits_file(), delimiter=",")
    images, labels = table[:, :-1].reshape(-1, 1, 8, 8) / 16.0, table[:, -1].astype(np.int64)
    order = np.random.default_rng(0).permutation(len(images))
    n_test = int(round(DIGITS_TEST_FRACTION * len(images)))
    test, train = order[:n_test], order[n_test:]
    return images[train], labels[train], images[test], labels[test]


def _torchvision(source: DatasetSource, name: str, root: Path, download: bool) -> Splits:
    import torchvision

    cls = getattr(torchvision.datasets, source.torchvision)
    try:
        train = cls(str(root), train=True, download=download)
        test = cls(str(root), train=False, download=download)
    except RuntimeError as exc:
        raise LowlossError(
            f"dataset {name!r} not found under {root} ({exc}); "
            f"pass --download (or `download: true` in the config) to fetch it"
        ) from None

    def images(split) -> np.ndarray:
        data = np.asarray(split.data)
        return data[:, None] if data.ndim == 3 else data.transpose(0, 3, 1, 2)

    return images(train) / 255.0, _targets(train), images(test) / 255.0, _targets(test)


def _targets(split) -> np.ndarray:
    return np.asarray(split.targets, dtype=np.int64)


def install_debian_fashion_mnist(root: Path, source: Path = DEBIAN_FASHION_MNIST) -> bool:
    """Decompress Debian's gzipped IDX files into torchvision's layout, once.

    Debian recompressed the archives, so torchvision's checksums would reject the .gz files; the
    decompressed files are what torchvision reads with download=False.
    """
    raw = Path(root) / "FashionMNIST" / "raw"
    sources = sorted(source.glob("*-ubyte.gz")) if source.is_dir() else []
    if not sources:
        return False
    raw.mkdir(parents=True, exist_ok=True)
    for gz in sources:
        target = raw / gz.name.removesuffix(".gz")
        if not target.exists():  # atomic, under a unique name: jobs of several experiments may unpack at once
            write_atomic(target, lambda tmp, gz=gz: _gunzip(gz, tmp))
    return True


def _gunzip(source: Path, target: Path) -> None:
    with gzip.open(source, "rb") as src, open(target, "wb") as dst:
        shutil.copyfileobj(src, dst)


def _synthetic(shape: tuple[int, int, int], n_train: int = 1000, n_test: int = 500) -> Splits:
    """Ten classes, each a fixed smooth random template plus noise: learnable, but not trivially."""
    gen = torch.Generator().manual_seed(1234)
    templates = torch.randn((10, *shape), generator=gen)
    templates = F.avg_pool2d(templates, 3, stride=1, padding=1) * 3.0

    def sample(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.randint(0, 10, (n,), generator=gen)
        return templates[y] + torch.randn((n, *shape), generator=gen), y

    x_train, y_train = sample(n_train)
    x_test, y_test = sample(n_test)
    return x_train, y_train, x_test, y_test


def load_dataset(
    name: str,
    root: str | Path = "data",
    download: bool = False,
    device: torch.device | str = "cpu",
    input_shape: tuple[int, ...] | None = None,
    normalize: Normalize | None = None,
) -> Dataset:
    """Load a dataset of the table (`lowloss.training.datasets`) onto `device`; an unknown name lists the
    known ones. `input_shape` resizes the images, `normalize` replaces the standardisation by the training
    split's statistics."""
    if name not in DATASETS:
        raise unknown_name("dataset", name, DATASETS)
    source, root = DATASETS[name], Path(root)
    if source.synthetic is not None:
        splits = _synthetic(source.synthetic)
    elif source.torchvision is None:
        splits = _digits()
    else:
        if name == "fashion-mnist":
            install_debian_fashion_mnist(root)  # the same images; torchvision then finds them and downloads nothing
        splits = _torchvision(source, name, root, download)
    return _from_arrays(name, splits, 10, source.augment, input_shape, normalize).to(device)


def augment_batch(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """CIFAR augmentation on a batch: random crop with zero padding 4 and a random horizontal flip.

    Written by hand because torchvision's transforms draw one crop per call, not one per sample of
    a batched tensor; here every sample gets its own offsets in a single indexing op.
    """
    n, _, h, w = x.shape
    padded = F.pad(x, (CIFAR_PAD,) * 4)
    offsets = torch.randint(0, 2 * CIFAR_PAD + 1, (2, n), generator=generator).to(x.device)
    rows = (offsets[0][:, None] + torch.arange(h, device=x.device))[:, :, None]
    cols = (offsets[1][:, None] + torch.arange(w, device=x.device))[:, None, :]
    cropped = padded[torch.arange(n, device=x.device)[:, None, None], :, rows, cols].permute(0, 3, 1, 2)
    flip = (torch.rand(n, generator=generator) < 0.5).to(x.device)
    return torch.where(flip[:, None, None, None], cropped.flip(-1), cropped)


def check_dataset(data: Dataset, artifact: Artifact) -> None:
    """The dataset must fit the checkpoint's input shape and classes (another dataset only warns)."""
    meta = artifact.meta
    if list(data.input_shape) != list(meta["input_shape"]) or data.num_classes != meta["num_classes"]:
        raise LowlossError(
            f"{artifact.path}: expects inputs {meta['input_shape']} and {meta['num_classes']} "
            f"classes, dataset {data.name!r} has {list(data.input_shape)} and {data.num_classes}"
        )
    if meta.get("dataset") != data.name:
        log.warning("endpoints were trained on %r, evaluating on %r", meta.get("dataset"), data.name)
