"""How many weight-adjustment breakpoints K the `*+wa` methods need: the measurement behind the default.

Rule (decided on training data only): the default K is the smallest K whose worst *train* accuracy,
averaged over the pairs, is within TOLERANCE percentage points of re-fitting at every evaluated t
(`--wa-breakpoints all`), for every `*+wa` method and every experiment measured. Test accuracy is
printed for information and plays no part in the choice.

    python scripts/wa_breakpoints.py            # the default config's two digits experiments
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import pandas as pd
import torch

from lowloss.evaluate import evaluate_path, worst_points
from lowloss.methods.context import ALL, Context, Options
from lowloss.methods.registry import WA_METHODS, get_method
from lowloss.nets.network import Network
from lowloss.storage.model_files import load_model
from lowloss.training.config import TrainConfig
from lowloss.training.data import load_dataset
from lowloss.training.train import train_endpoint

CANDIDATES = (2, 3, 5, 9, ALL)
TOLERANCE = 0.1  # percentage points of worst train accuracy
EXPERIMENTS = {"onehidden": {"width": 256}, "fc3": {"widths": [256, 128]}}
PAIRS = ((0, 1), (2, 3), (4, 5))
POINTS = 21


def main() -> int:
    torch.set_num_threads(2)
    data = load_dataset("digits")
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for arch, options in EXPERIMENTS.items():
            models = {}
            for seed in {s for pair in PAIRS for s in pair}:
                models[seed] = Path(folder) / f"{arch}-{seed}.safetensors"
                train_endpoint(arch, options, data, TrainConfig(epochs=30, seed=seed), models[seed], progress=False)
            for a, b in PAIRS:
                model, artifact_a = load_model(models[a])
                _, artifact_b = load_model(models[b])
                network = Network(model)
                for method in WA_METHODS:
                    for k in CANDIDATES:
                        ctx = Context(network, data, Options(wa_breakpoints=k, progress=False))
                        path = get_method(method).build(artifact_a.tensors, artifact_b.tensors, ctx)
                        worst = worst_points(evaluate_path(network, path, data, POINTS, progress=False))
                        rows.append(
                            dict(
                                arch=arch,
                                pair=f"{a}-{b}",
                                method=method,
                                k=str(k),
                                train=100 * worst["train"]["acc"],
                                test=100 * worst["test"]["acc"],
                            )
                        )
                        print(rows[-1], flush=True)
    table = pd.DataFrame(rows).groupby(["arch", "method", "k"], sort=False)[["train", "test"]].mean()
    print(table.round(2).to_string())
    train = table["train"].unstack("k")
    gap = train.drop(columns=ALL).rsub(train[ALL], axis=0)
    print("\ngap to 'all' (worst train accuracy, points):\n" + gap.round(2).to_string())
    chosen = next((k for k in CANDIDATES[:-1] if (gap[str(k)] <= TOLERANCE).all()), ALL)
    print(f"\nsmallest K within {TOLERANCE} points of 'all' everywhere: {chosen}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
