"""Datasets: the embedded default, the generated ones, the Fashion-MNIST IDX path and clear errors."""

import gzip
import struct

import numpy as np
import pytest
import torch

from lowloss.errors import LowlossError
from lowloss.training.data import augment_batch, install_debian_fashion_mnist, load_dataset


def test_digits_split_is_fixed_and_standardised():
    a, b = load_dataset("digits"), load_dataset("digits")
    assert a.x_train.shape == (1348, 1, 8, 8) and a.x_test.shape == (449, 1, 8, 8)
    assert torch.equal(a.y_test, b.y_test) and torch.equal(a.x_train, b.x_train)
    assert abs(a.x_train.mean().item()) < 1e-5 and abs(a.x_train.std().item() - 1) < 1e-3
    assert set(a.y_train.tolist()) == set(range(10))


def test_digits_are_scikit_learns_load_digits():
    from sklearn.datasets import load_digits

    bunch, data = load_digits(), load_dataset("digits")
    images = torch.cat([data.x_train, data.x_test]).flatten(1)
    labels = torch.cat([data.y_train, data.y_test])
    order = np.random.default_rng(0).permutation(len(bunch.target))  # the split's fixed shuffle
    test_first = np.concatenate([order[len(data.y_test) :], order[: len(data.y_test)]])
    assert torch.equal(labels, torch.as_tensor(bunch.target[test_first]))
    raw = torch.as_tensor(bunch.data[test_first] / 16.0, dtype=torch.float32)
    train = raw[: len(data.y_train)]  # standardised with the training split's mean and deviation (one channel)
    torch.testing.assert_close(images, (raw - train.mean()) / train.std(), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name,shape", [("synthetic-mnist", (1, 28, 28)), ("synthetic-cifar", (3, 32, 32))])
def test_synthetic_shapes(name, shape):
    data = load_dataset(name)
    assert data.input_shape == shape and data.num_classes == 10 and len(data.y_test) == 500


def test_unknown_dataset_lists_the_known_ones():
    with pytest.raises(LowlossError, match="unknown dataset 'imagenet'.*digits"):
        load_dataset("imagenet")


def test_missing_download_names_the_path_and_the_fix(tmp_path):
    with pytest.raises(LowlossError, match=f"not found under {tmp_path}.*--download"):
        load_dataset("mnist", root=tmp_path)


def _write_idx(path, array: np.ndarray):
    header = struct.pack(">I", 0x0800 + array.ndim) + b"".join(struct.pack(">I", d) for d in array.shape)
    with gzip.open(path, "wb") as handle:
        handle.write(header + array.astype(np.uint8).tobytes())


def test_fashion_mnist_from_debian_style_idx_files(tmp_path):
    source = tmp_path / "debian"
    source.mkdir()
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 12), ("t10k", 5)):
        _write_idx(source / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        _write_idx(source / f"{prefix}-labels-idx1-ubyte.gz", np.arange(n) % 10)
    root = tmp_path / "root"
    assert install_debian_fashion_mnist(root, source)
    import lowloss.training.data as data_module

    original = data_module.DEBIAN_FASHION_MNIST
    data_module.DEBIAN_FASHION_MNIST = source
    try:
        data = load_dataset("fashion-mnist", root=root)
    finally:
        data_module.DEBIAN_FASHION_MNIST = original
    assert data.x_train.shape == (12, 1, 28, 28) and data.x_test.shape == (5, 1, 28, 28)
    assert data.y_train.tolist() == [i % 10 for i in range(12)]


def test_augmentation_crops_and_flips_per_sample():
    x = torch.arange(2 * 3 * 32 * 32, dtype=torch.float32).reshape(2, 3, 32, 32)
    out = augment_batch(x.repeat(8, 1, 1, 1), torch.Generator().manual_seed(0))
    assert out.shape == (16, 3, 32, 32)
    again = augment_batch(x.repeat(8, 1, 1, 1), torch.Generator().manual_seed(0))
    assert torch.equal(out, again)
    assert len({tuple(o[0, 16, :4].tolist()) for o in out[::2]}) > 1, "offsets should differ between samples"
    # every output row is a (possibly flipped, shifted, zero-padded) piece of an input row
    values = set(x.flatten().tolist()) | {0.0}
    assert set(out.flatten().tolist()) <= values
