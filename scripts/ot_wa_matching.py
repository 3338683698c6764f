"""`ot+wa` matched on the first layer's rows (the paper's §3.5 and §4.1, and its authors' code) against the
same method matched on whole butterflies (rows and outgoing weights), on one-hidden-layer networks.

    python scripts/ot_wa_matching.py                         # digits, the default config's networks
    python scripts/ot_wa_matching.py fashion-mnist 512 20    # dataset, width, training epochs
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import pandas as pd
import torch

from lowloss.evaluate import evaluate_path, worst_points
from lowloss.methods.context import Context, Options
from lowloss.methods.layerwise import Route
from lowloss.methods.matching import match_group, save_matching
from lowloss.methods.registry import get_method
from lowloss.nets.network import Network
from lowloss.storage.model_files import load_model
from lowloss.storage.weights import load_weights
from lowloss.training.config import TrainConfig
from lowloss.training.data import load_dataset
from lowloss.training.train import train_endpoint

PAIRS = ((0, 1), (2, 3), (4, 5))


def main(dataset: str = "digits", width: int = 256, epochs: int = 30) -> int:
    torch.set_num_threads(2)
    data = load_dataset(dataset)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for a, b in PAIRS:
            paths = []
            for seed in (a, b):
                paths.append(Path(folder) / f"{seed}.safetensors")
                train_endpoint(
                    "onehidden",
                    {"width": width},
                    data,
                    TrainConfig(epochs=epochs, seed=seed),
                    paths[-1],
                    progress=False,
                )
            (model, art_a), (_, art_b) = load_model(paths[0]), load_model(paths[1])
            network = Network(model)
            theta_a, theta_b = art_a.tensors, art_b.tensors
            route = Route("linear+wa", theta_a, theta_b, Context(network, data, Options(progress=False)))  # unmatched
            group, start, end = network.spec.groups[0], route.points[0], route.ends[0]
            matchings = {
                on: {group: match_group(start, end, units, group)}
                for on, units in (("rows", route.stage_units(0)), ("butterflies", network.spec))
            }
            for on, perms in matchings.items():
                file = Path(folder) / f"{on}.safetensors"
                save_matching(file, perms, "ot+wa", (art_a, art_b), "emd")
                ctx = Context(network, data, Options(progress=False), (art_a, art_b), matching=load_weights(file))
                path = get_method("ot+wa").build(theta_a, theta_b, ctx)
                worst = worst_points(evaluate_path(network, path, data, 21, progress=False))
                rows.append(
                    dict(
                        pair=f"{a}-{b}",
                        matched_on=on,
                        train=100 * worst["train"]["acc"],
                        test=100 * worst["test"]["acc"],
                    )
                )
                print(rows[-1], flush=True)
    table = pd.DataFrame(rows)
    print(table.groupby("matched_on")[["train", "test"]].agg(["mean", "std"]).round(2).to_string())
    return 0


if __name__ == "__main__":
    sys.exit(main(*(cast(arg) for cast, arg in zip((str, int, int), sys.argv[1:]))))
