"""Dataset registry: every dataset becomes four tensors that live on the device as a whole.

`digits` (scikit-learn's embedded 8x8 digits) needs no download and is the default. `mnist`,
`fashion-mnist` and `cifar10` go through torchvision with an explicit `download` switch;
`fashion-mnist` is also read from Debian's `dataset-fashion-mnist` files when they are installed.
`synthetic-mnist` and `synthetic-cifar` are generated, learnable and tiny, for fast tests.
"""

from __future__ import annotations

import gzip
import importlib.util
import shutil
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from lowloss.artifacts import write_atomic
from lowloss.errors import LowlossError, unknown_name

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
DIGITS_TEST_FRACTION = 0.25
DIGITS_FILE = Path("datasets", "data", "digits.csv.gz")  # inside the scikit-learn package
CIFAR_PAD = 4


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
        return replace(self, x_train=self.x_train.to(device), y_train=self.y_train.to(device),
                       x_test=self.x_test.to(device), y_test=self.y_test.to(device))


def _standardise(x_train: torch.Tensor, x_test: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel standardisation with the training split's statistics."""
    dims = (0, 2, 3)
    mean = x_train.mean(dim=dims, keepdim=True)
    std = x_train.std(dim=dims, keepdim=True).clamp_min(1e-6)
    return (x_train - mean) / std, (x_test - mean) / std


def _from_arrays(name: str, x_train, y_train, x_test, y_test, num_classes: int, augment: bool = False) -> Dataset:
    x_train = torch.as_tensor(np.asarray(x_train), dtype=torch.float32)
    x_test = torch.as_tensor(np.asarray(x_test), dtype=torch.float32)
    x_train, x_test = _standardise(x_train, x_test)
    return Dataset(name, x_train.contiguous(), torch.as_tensor(np.asarray(y_train), dtype=torch.int64),
                   x_test.contiguous(), torch.as_tensor(np.asarray(y_test), dtype=torch.int64), num_classes, augment)


def _digits(root: Path, download: bool) -> Dataset:
    """scikit-learn's digits, read from the file it ships (64 pixels and the label per row, the file its
    `load_digits` reads) without importing scikit-learn, whose import costs seconds in every workflow job;
    a test checks the arrays against `load_digits`."""
    package = importlib.util.find_spec("sklearn")
    if package is None or not package.submodule_search_locations:
        raise LowlossError("dataset 'digits' needs scikit-learn (pip install scikit-learn)")
    table = np.loadtxt(Path(package.submodule_search_locations[0]) / DIGITS_FILE, delimiter=",")
    images, labels = table[:, :-1].reshape(-1, 1, 8, 8) / 16.0, table[:, -1].astype(np.int64)
    order = np.random.default_rng(0).permutation(len(images))
    n_test = int(round(DIGITS_TEST_FRACTION * len(images)))
    test, train = order[:n_test], order[n_test:]
    return _from_arrays("digits", images[train], labels[train], images[test], labels[test], 10)


def _torchvision(cls_name: str, name: str, root: Path, download: bool, augment: bool = False) -> Dataset:
    import torchvision

    cls = getattr(torchvision.datasets, cls_name)
    try:
        train = cls(str(root), train=True, download=download)
        test = cls(str(root), train=False, download=download)
    except RuntimeError as exc:
        raise LowlossError(f"dataset {name!r} not found under {root} ({exc}); "
                           f"pass --download (or `download: true` in the config) to fetch it") from None

    def images(split) -> np.ndarray:
        data = np.asarray(split.data)
        return data[:, None] if data.ndim == 3 else data.transpose(0, 3, 1, 2)

    return _from_arrays(name, images(train) / 255.0, _targets(train), images(test) / 255.0,
                        _targets(test), 10, augment)


def _targets(split) -> np.ndarray:
    return np.asarray(split.targets, dtype=np.int64)


def _fashion_mnist(root: Path, download: bool) -> Dataset:
    """Debian's files when installed (the same images; torchvision then finds them and downloads nothing),
    else torchvision's download when asked for."""
    install_debian_fashion_mnist(root)
    return _torchvision("FashionMNIST", "fashion-mnist", root, download)


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


def _synthetic(shape: tuple[int, int, int], name: str, n_train: int = 1000, n_test: int = 500) -> Dataset:
    """Ten classes, each a fixed smooth random template plus noise: learnable, but not trivially."""
    gen = torch.Generator().manual_seed(1234)
    templates = torch.randn((10, *shape), generator=gen)
    templates = F.avg_pool2d(templates, 3, stride=1, padding=1) * 3.0

    def sample(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.randint(0, 10, (n,), generator=gen)
        return templates[y] + torch.randn((n, *shape), generator=gen), y

    x_train, y_train = sample(n_train)
    x_test, y_test = sample(n_test)
    return _from_arrays(name, x_train, y_train, x_test, y_test, 10)


LOADERS: dict[str, Callable[[Path, bool], Dataset]] = {
    "digits": _digits,
    "mnist": lambda root, download: _torchvision("MNIST", "mnist", root, download),
    "fashion-mnist": _fashion_mnist,
    "cifar10": lambda root, download: _torchvision("CIFAR10", "cifar10", root, download, augment=True),
    "synthetic-mnist": lambda root, download: _synthetic((1, 28, 28), "synthetic-mnist"),
    "synthetic-cifar": lambda root, download: _synthetic((3, 32, 32), "synthetic-cifar"),
}


def load_dataset(name: str, root: str | Path = "data", download: bool = False,
                 device: torch.device | str = "cpu") -> Dataset:
    """Load a registered dataset onto `device`; an unknown name lists the known ones."""
    if name not in LOADERS:
        raise unknown_name("dataset", name, LOADERS)
    return LOADERS[name](Path(root), download).to(device)


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
