"""The user's own data: an image folder, a torch Dataset or DataLoader, (x, y) tensors; and a named dataset
resized and normalised as the user's networks need."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from lowloss.errors import LowlossError
from lowloss.training.data import load_dataset
from lowloss.training.user_data import image_folder, user_dataset


def write_images(root, sizes: dict[str, int], shape=(6, 5), seed: int = 0) -> dict[str, list[np.ndarray]]:
    """PNG files root/<split>/<class>/<i>.png, each class a brightness; returns the pixels by split."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    pixels = {}
    for split, count in sizes.items():
        pixels[split] = []
        for label, name in enumerate(["cat", "dog"]):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                image = rng.integers(0, 100, (*shape, 3), dtype=np.uint8) + 120 * label
                Image.fromarray(image).save(folder / f"{i}.png")
                pixels[split].append(image)
    return pixels


def test_an_image_folder_reads_both_splits_by_class_and_standardises_them(tmp_path):
    pixels = write_images(tmp_path, {"train": 5, "test": 3})
    data = image_folder(tmp_path, progress=False)
    assert data.input_shape == (3, 6, 5) and data.num_classes == 2 and len(data.y_test) == 6
    assert data.y_train.tolist() == [0] * 5 + [1] * 5  # ImageFolder's order: by class, then by file name
    raw = torch.tensor(np.stack(pixels["train"]), dtype=torch.float32).permute(0, 3, 1, 2) / 255
    mean, std = raw.mean(dim=(0, 2, 3), keepdim=True), raw.std(dim=(0, 2, 3), keepdim=True)
    torch.testing.assert_close(data.x_train, (raw - mean) / std, atol=1e-5, rtol=1e-5)


def test_an_image_folder_at_the_users_size_and_normalisation(tmp_path):
    write_images(tmp_path, {"train": 2, "test": 2})
    data = image_folder(tmp_path, (1, 4, 4), ((0.5,), (0.25,)), progress=False)
    assert data.input_shape == (1, 4, 4)
    assert data.x_train.min() >= -2 and data.x_train.max() <= 2  # (x - 0.5) / 0.25 for x in [0, 1]


@pytest.mark.parametrize(
    "layout,fragment",
    [
        ({"train": 2}, "no folder test/"),
        ({"train": 2, "test": 2, "extra": 1}, None),
    ],
)
def test_an_image_folder_needs_train_and_test(tmp_path, layout, fragment):
    write_images(tmp_path, layout)
    if fragment is None:
        assert image_folder(tmp_path, progress=False).num_classes == 2
        return
    with pytest.raises(LowlossError, match=fragment):
        image_folder(tmp_path, progress=False)


def test_images_of_different_sizes_need_an_input_size(tmp_path):
    write_images(tmp_path / "a", {"train": 2, "test": 2}, shape=(6, 5))
    write_images(tmp_path / "b", {"train": 2}, shape=(7, 5), seed=1)
    (tmp_path / "a" / "train" / "cat" / "odd.png").write_bytes(
        (tmp_path / "b" / "train" / "cat" / "0.png").read_bytes()
    )
    with pytest.raises(LowlossError, match="inputs differ in size"):
        image_folder(tmp_path / "a", progress=False)
    assert image_folder(tmp_path / "a", (3, 6, 5), progress=False).input_shape == (3, 6, 5)


def test_a_dataset_a_loader_and_tensors_give_the_same_data():
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(50, 2, 3, 3, generator=gen), torch.randint(0, 4, (50,), generator=gen)
    x_test, y_test = x[:10] + 1, y[:10]
    forms = [
        ((x, y), (x_test, y_test)),
        (TensorDataset(x, y), TensorDataset(x_test, y_test)),
        (DataLoader(TensorDataset(x, y), batch_size=7), DataLoader(TensorDataset(x_test, y_test), batch_size=3)),
    ]
    for train, test in forms:
        data = user_dataset(train, test, progress=False)
        assert (
            torch.equal(data.x_train, x) and torch.equal(data.y_test, y_test) and data.num_classes == int(y.max()) + 1
        )


def test_no_test_split_is_an_empty_one():
    data = user_dataset((torch.zeros(4, 1, 2, 2), torch.tensor([0, 1, 2, 1])), progress=False)
    assert data.x_test.shape == (0, 1, 2, 2) and data.num_classes == 3


@pytest.mark.parametrize(
    "train,fragment",
    [
        ((torch.zeros(4, 3), torch.zeros(4)), "labels must be class indices"),
        ((torch.zeros(4, 3), torch.tensor([0, 1, -1, 2])), "labels must be class indices"),
        ((torch.zeros(4, 3), torch.zeros(3, dtype=torch.long)), "are not N inputs and N labels"),
        ((torch.full((2, 3), float("nan")), torch.zeros(2, dtype=torch.long)), "finite floating-point"),
        ([1, 2, 3], "expected (x, y) tensors"),
        ("digits", "expected a torch Dataset"),
        (DataLoader(TensorDataset(torch.zeros(0, 2), torch.zeros(0))), "holds no samples"),
    ],
)
def test_data_that_is_not_inputs_and_labels_is_refused(train, fragment):
    with pytest.raises(LowlossError) as error:
        user_dataset(train, progress=False)
    assert fragment in str(error.value)


def test_a_named_dataset_is_resized_and_normalised_for_the_users_networks():
    plain = load_dataset("digits")
    wide = load_dataset("digits", input_shape=(3, 16, 16), normalize=((0.25,), (0.5,)))
    assert wide.input_shape == (3, 16, 16) and torch.equal(wide.y_train, plain.y_train)
    assert torch.equal(wide.x_train[:, 0], wide.x_train[:, 2])  # the grey channel, repeated
    same = load_dataset("digits", input_shape=(1, 8, 8), normalize=((0.25,), (0.5,)))
    standardised = same.x_train * 0.5 + 0.25  # back in [0, 1]: the normalisation is the user's, not the split's
    assert standardised.min() >= 0 and standardised.max() <= 1
    torch.testing.assert_close((standardised - standardised.mean()) / standardised.std(), plain.x_train)
    with pytest.raises(LowlossError, match="has 3 channels; they cannot become 1"):
        load_dataset("synthetic-cifar", input_shape=(1, 32, 32))
