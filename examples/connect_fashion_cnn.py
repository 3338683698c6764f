"""Connect the two SmallCNNs of train_fashion_cnn.py from Python: the path table, its worst point, the figure,
and the network halfway along the path as an ordinary nn.Module.

    python examples/train_fashion_cnn.py --out checkpoints
    python examples/connect_fashion_cnn.py --checkpoints checkpoints --out results/fashion-cnn
"""

import argparse
import os
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

import lowloss

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fashion_cnn import SmallCNN  # noqa: E402
from train_fashion_cnn import MEAN, STD  # noqa: E402

METHODS = {"linear": {}, "weight-matching": {"bn_batches": 8}, "ot+wa": {}}
"""Each method with its options: weight matching's path measures BatchNorm's statistics at every point."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoints", type=Path, default=Path("checkpoints"))
    parser.add_argument("--out", type=Path, default=Path("results/fashion-cnn"))
    parser.add_argument("--points", type=int, default=21, help="evaluated points per leg")
    parser.add_argument("--methods", nargs="+", choices=list(METHODS), default=list(METHODS))
    args = parser.parse_args()
    model_a, model_b = SmallCNN(), SmallCNN()
    model_a.load_state_dict(torch.load(args.checkpoints / "cnn-a.pt", weights_only=True))
    model_b.load_state_dict(load_file(str(args.checkpoints / "cnn-b.safetensors")))
    args.out.mkdir(parents=True, exist_ok=True)
    for method in args.methods:
        options = METHODS[method]
        result = lowloss.connect(
            model_a, model_b, method, train="fashion-mnist", normalize=(MEAN, STD), points=args.points, **options
        )
        worst = result.worst["test"]
        print(f"{method}: worst test accuracy {worst['acc']:.4f} at position {worst['position']:.2f}")
        result.table.to_csv(args.out / f"{method}.csv", index=False)
        result.save_figure(args.out / method)
    halfway = result.model_at(len(result.path) / 2)  # an nn.Module: use it like any other
    weights = sum(p.numel() for p in halfway.parameters())
    print(f"the last path's midpoint: {type(halfway).__name__} with {weights} weights")


if __name__ == "__main__":
    main()
