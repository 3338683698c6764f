"""The examples: the plain PyTorch training script runs on IDX files (here tiny generated ones) and saves state
dicts that lowloss reads as checkpoints of `fashion_cnn:SmallCNN`."""

from __future__ import annotations

import gzip
import struct
import subprocess
import sys

import numpy as np
import torch

from lowloss.storage.state_dicts import fitted_state_dict, read_state_dict
from tests.test_any_model import EXAMPLES

sys.path.insert(0, EXAMPLES)
from fashion_cnn import SmallCNN  # noqa: E402
from train_fashion_cnn import FILES, read_idx  # noqa: E402


def write_idx(path, array: np.ndarray) -> None:
    """An IDX file as Fashion-MNIST ships them: magic (0, 0, unsigned byte, dimensions), sizes, bytes; gzipped."""
    header = bytes([0, 0, 8, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as handle:
        handle.write(header + array.astype(np.uint8).tobytes())


def test_the_training_script_saves_checkpoints_lowloss_reads(tmp_path):
    rng = np.random.default_rng(0)
    data = tmp_path / "idx"
    data.mkdir()
    for split, count in (("train", 96), ("test", 32)):
        images, labels = rng.integers(0, 256, (count, 28, 28)), rng.integers(0, 10, count)
        for file, array in zip(FILES[split], (images, labels)):
            write_idx(data / file, array)
            assert np.array_equal(read_idx(data / file), array)
    out = tmp_path / "checkpoints"
    script = [sys.executable, f"{EXAMPLES}/train_fashion_cnn.py", "--data", data, "--out", out]
    result = subprocess.run([*map(str, script), "--epochs", "1", "--width", "2"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "seed 1 epoch 1: loss" in result.stdout
    states = []
    for file in (out / "cnn-a.pt", out / "cnn-b.safetensors"):
        states.append(fitted_state_dict(file, read_state_dict(file), SmallCNN(2), "fashion_cnn:SmallCNN"))
    assert not torch.equal(states[0]["conv1.weight"], states[1]["conv1.weight"])  # two seeds, two networks
    assert states[0]["bn1.num_batches_tracked"].item() == 1  # one epoch of one batch of 96 images
