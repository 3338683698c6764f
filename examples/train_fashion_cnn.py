"""Train two SmallCNNs on Fashion-MNIST with plain PyTorch and save their state dicts: seed 0 as a `.pt` file
(torch.save), seed 1 as `.safetensors`. Nothing here uses lowloss; `lowloss connect` then takes the two files.

    python examples/train_fashion_cnn.py --out checkpoints     # Debian's dataset-fashion-mnist files

Images are scaled to [0, 1] and normalised with Fashion-MNIST's mean and deviation (MEAN, STD below); lowloss
is told the same with `--normalize 0.2860,0.3530`.
"""

import argparse
import gzip
import os
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fashion_cnn import SmallCNN  # noqa: E402

MEAN, STD = 0.2860, 0.3530
FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (gzipped): a big-endian header of the dimensions, then unsigned bytes."""
    with gzip.open(path, "rb") as handle:
        data = handle.read()
    dims = data[3]
    shape = np.frombuffer(data, ">u4", dims, offset=4)
    return np.frombuffer(data, np.uint8, offset=4 + 4 * dims).reshape(shape)


def split(folder: Path, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = (read_idx(folder / file) for file in FILES[name])
    x = (torch.tensor(images, dtype=torch.float32)[:, None] / 255.0 - MEAN) / STD
    return x, torch.tensor(labels, dtype=torch.int64)


def accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        correct = sum((model(xb).argmax(1) == yb).sum().item() for xb, yb in zip(x.split(1000), y.split(1000)))
    return correct / len(y)


def train(seed: int, data: dict, epochs: int, width: int, device: torch.device) -> SmallCNN:
    torch.manual_seed(seed)
    model = SmallCNN(width).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    x, y = (part.to(device) for part in data["train"])
    steps = epochs * ((len(y) + 127) // 128)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=0.05, total_steps=steps)
    for epoch in range(epochs):
        model.train()
        for index in torch.randperm(len(y), device=device).split(128):
            loss = F.cross_entropy(model(x[index]), y[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
        test_acc = accuracy(model, *(part.to(device) for part in data["test"]))
        print(f"seed {seed} epoch {epoch + 1}: loss {loss.item():.4f}, test accuracy {test_acc:.4f}", flush=True)
    return model.cpu().eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("/usr/share/datasets/fashion-mnist"))
    parser.add_argument("--out", type=Path, default=Path("checkpoints"))
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--width", type=int, default=16)
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    data = {name: split(args.data, name) for name in FILES}
    args.out.mkdir(parents=True, exist_ok=True)
    model_a = train(0, data, args.epochs, args.width, device)
    torch.save(model_a.state_dict(), args.out / "cnn-a.pt")
    model_b = train(1, data, args.epochs, args.width, device)
    save_file(model_b.state_dict(), str(args.out / "cnn-b.safetensors"))
    print(f"wrote {args.out / 'cnn-a.pt'} and {args.out / 'cnn-b.safetensors'}")


if __name__ == "__main__":
    main()
