"""The headline speed claim: `ot+wa` needs no training, Garipov et al.'s curve does.

On one digits pair (the paper's one-hidden-layer net, 2000 units), compare the wall time to build and
evaluate the `ot+wa` path (OT matching included) with the time to fit `garipov-polychain-3` for the
paper's MNIST budget (60 epochs) and evaluate it, and report both worst test accuracies.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import replace
from pathlib import Path

from lowloss.evaluate import evaluate_path, worst_points
from lowloss.methods.context import Context, Options
from lowloss.methods.curves import fit_curve, paper_epochs
from lowloss.methods.registry import get_method
from lowloss.nets.network import Network
from lowloss.storage.model_files import load_model
from lowloss.storage.weights import load_weights
from lowloss.training.config import TrainConfig
from lowloss.training.data import load_dataset
from lowloss.training.device import pick_device
from lowloss.training.train import train_endpoint

WIDTH = 2000
ENDPOINT_EPOCHS = 20
POINTS = 21


def _build_and_evaluate(ctx: Context, method: str) -> tuple[float, float, float]:
    """(seconds to build, seconds to evaluate, worst test accuracy) of `method`'s path."""
    theta_a, theta_b = (artifact.tensors for artifact in ctx.endpoints)
    start = time.perf_counter()
    path = get_method(method).build(theta_a, theta_b, ctx)
    built = time.perf_counter()
    table = evaluate_path(ctx.network, path, ctx.data, points=POINTS, progress=False)
    return built - start, time.perf_counter() - built, worst_points(table)["test"]["acc"]


def run() -> list[dict]:
    data = load_dataset("digits", device=pick_device())
    with tempfile.TemporaryDirectory() as folder:
        ends = [Path(folder) / f"seed{seed}.safetensors" for seed in (0, 1)]
        for seed, out in enumerate(ends):
            train_endpoint(
                "onehidden", {"width": WIDTH}, data, TrainConfig(epochs=ENDPOINT_EPOCHS, seed=seed), out, progress=False
            )
        (model, art_a), (_, art_b) = load_model(ends[0]), load_model(ends[1])
        ctx = Context(Network(model.to(data.x_train.device)), data, Options(progress=False), (art_a, art_b))

        ot_build_s, ot_eval_s, ot_wa_acc = _build_and_evaluate(ctx, "ot+wa")

        start = time.perf_counter()
        curve = Path(folder) / "curve.safetensors"
        epochs = paper_epochs(data.name)
        fit_curve("polychain", 3, art_a, art_b, data, TrainConfig(epochs=epochs, seed=0), curve, progress=False)
        fit_s = time.perf_counter() - start
        curve_ctx = replace(ctx, curve=load_weights(curve))
        curve_build_s, curve_eval_s, garipov_acc = _build_and_evaluate(curve_ctx, "garipov-polychain-3")

    ot_wa_s, garipov_s = ot_build_s + ot_eval_s, fit_s + curve_build_s + curve_eval_s
    note = (
        f"digits, onehidden width {WIDTH}, {POINTS} points per leg; ot+wa: build {ot_build_s:.1f} s + "
        f"evaluate {ot_eval_s:.1f} s; garipov: fit {fit_s:.1f} s + evaluate {curve_eval_s:.1f} s"
    )
    return [
        {
            "name": "ot+wa: build + evaluate (s)",
            "baseline": f"garipov-polychain-3: fit {epochs} epochs + evaluate",
            "value": ot_wa_s,
            "baseline_value": garipov_s,
            "ratio": garipov_s / ot_wa_s,
            "note": note,
        },
        {
            "name": "ot+wa: worst test accuracy",
            "baseline": "garipov-polychain-3: worst test accuracy",
            "value": ot_wa_acc,
            "baseline_value": garipov_acc,
            "ratio": ot_wa_acc / garipov_acc,
            "note": "ratio > 1: ot+wa's worst point is better",
        },
    ]
