"""How many connector fits a learned method's row needs: the measurement behind `connector_fits`' default.

A learned method's path depends on its connector ν, and ν on the seed it was fitted with (and on how one
machine rounds): one fit is one sample. Rule (decided on training data only): fit every learned method of
the default config's one-hidden experiment FITS times (seeds 0, 1, …) with the config's own connector
options, connect every pair with each fit, and take per method the standard deviation over fits of the
worst *train* accuracy, averaged over the pairs (σ). The default is the smallest n whose standard error
σ/√n is at most TOLERANCE percentage points for every method. Test accuracy is printed for information
and plays no part in the choice.

    python scripts/connector_fits.py                      # 8 fits, every pair of the experiment
    python scripts/connector_fits.py --fits 5 --pairs 2   # a smaller measurement (the first pairs)
    python scripts/connector_fits.py --folder runs/fits    # keep (and reuse) the models and connectors

Each path is made and evaluated as `lowloss connect` does (`lowloss.api.connection.connect_endpoints`).
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch
import yaml

from lowloss.api.connection import connect_endpoints
from lowloss.api.models import model_files
from lowloss.methods.context import Options
from lowloss.methods.flows.config import HIDDEN, LAYERS, FitConfig
from lowloss.methods.flows.connector import fit_connector
from lowloss.methods.registry import FLOWS, get_method
from lowloss.storage.model_set import load_model_set, write_model_set
from lowloss.storage.weights import load_weights
from lowloss.training.config import TrainConfig
from lowloss.training.data import load_dataset
from lowloss.training.train import train_endpoint

CONFIG = Path(__file__).resolve().parents[1] / "config.yaml"
EXPERIMENT = "digits-onehidden"
FITS = 8
TOLERANCE = 0.25  # percentage points: the standard error of a row's mean over fits
BATCH = {"flow": 256, "bijection": 128}  # `lowloss fit-connector`'s defaults


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fits", type=int, default=FITS, help=f"connector fits per method (default {FITS})")
    parser.add_argument("--pairs", type=int, help="the experiment's first N pairs (default all)")
    parser.add_argument("--methods", nargs="+", choices=list(FLOWS), default=list(FLOWS), help="default: all")
    parser.add_argument(
        "--folder", type=Path, help="where the models and connectors are kept; those already there are reused"
    )
    args = parser.parse_args()
    torch.set_num_threads(2)
    experiment = yaml.safe_load(CONFIG.read_text())["experiments"][EXPERIMENT]
    data = load_dataset(experiment["dataset"])
    train = TrainConfig(**experiment["train"])
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        folder = args.folder or Path(scratch)
        folder.mkdir(parents=True, exist_ok=True)

        def model(seed: int) -> Path:
            out = folder / f"seed{seed}.safetensors"
            if not out.exists():
                config = TrainConfig(**{**train.__dict__, "seed": seed})
                train_endpoint(experiment["arch"], experiment["arch_options"], data, config, out, progress=False)
            return out

        write_model_set(folder / "V.json", [model(seed) for seed in experiment["model_set_seeds"]])
        model_set = load_model_set(folder / "V.json")
        pairs = [model_files([model(a), model(b)]) for a, b in experiment["pairs"][: args.pairs]]
        for method in args.methods:
            options = dict(experiment["connectors"].get(method, {}))
            layers, hidden = options.pop("layers", LAYERS), options.pop("hidden", HIDDEN)
            options.setdefault("batch_size", BATCH[FLOWS[method][1]])
            for fit in range(args.fits):
                started = time.perf_counter()
                connector = folder / f"{method}-{fit}.safetensors"
                config = FitConfig(**{**options, "seed": options.get("seed", 0) + fit})
                if not connector.exists():
                    fit_connector(method, model_set, connector, layers, hidden, config, data, "cpu", progress=False)
                for endpoints in pairs:
                    connection = connect_endpoints(
                        endpoints,
                        data,
                        get_method(method),
                        Options(progress=False),
                        experiment["connect"]["points"],
                        connector=load_weights(connector),
                    )
                    worst = connection.worst
                    pair = "-".join(artifact.path.stem for artifact in endpoints.artifacts)
                    rows.append(
                        dict(method=method, fit=fit, pair=pair, train=100 * worst["train"]["acc"],
                             test=100 * worst["test"]["acc"])
                    )  # fmt: skip
                print(*rows[-len(pairs) :], f"{time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    table = pd.DataFrame(rows)
    spread = table.groupby(["method", "pair"])[["train", "test"]].std().groupby("method").mean()
    mean = table.groupby("method")[["train", "test"]].mean()
    summary = mean.join(spread, rsuffix="_std_over_fits")
    print(summary.round(3).to_string())
    sigma = spread["train"].max()
    needed = max(1, math.ceil((sigma / TOLERANCE) ** 2))
    print(f"largest spread over fits of the worst train accuracy: {sigma:.3f} points")
    print(f"fits for a standard error of at most {TOLERANCE} points: {needed} ({args.fits} fits, {len(pairs)} pairs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
