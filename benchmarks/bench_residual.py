"""Residual and deep conv networks on Fashion-MNIST: every method that applies, with and without REPAIR, and
the `rebasin` package's weight matching (PyPI) beside ours, on the same two trained endpoints.

Endpoints are trained here (seeds 0 and 1, cached under results/bench/) on real Fashion-MNIST (Debian's
dataset-fashion-mnist or a download). Every path is evaluated on the whole test split; BatchNorm networks
get their running statistics recomputed at every point (`--bn-batches`), which is what makes their paths
meaningful at all, and the layer-wise route (`*+wa`, `*+bfly`) fits on points so measured. Rows compare a
`+repair` method with the same method unrepaired (ratio of worst test accuracies), and rebasin's matching with
ours (ratio of matching times; barriers in the note).
"""

from __future__ import annotations

import copy
import time
from pathlib import Path

import torch

from lowloss.api.defaults import REPAIR_BATCHES
from lowloss.evaluate import evaluate_path
from lowloss.evaluate.fixes import point_fixes
from lowloss.methods.context import Context, Options
from lowloss.methods.registry import get_method
from lowloss.methods.weight_matching import weight_matching_matcher
from lowloss.nets.batchnorm import batchnorm_layers
from lowloss.nets.network import Network
from lowloss.nets.params import Params
from lowloss.nets.spec import permute
from lowloss.paths.legs import Leg
from lowloss.paths.legs import Path as ConnectionPath
from lowloss.storage.model_files import load_model
from lowloss.training.config import TrainConfig
from lowloss.training.data import Dataset, load_dataset
from lowloss.training.device import pick_device
from lowloss.training.train import train_endpoint

CACHE = Path(__file__).resolve().parents[1] / "results" / "bench"
CPU_SCALE = {"resnet_width": 0.25, "vgg_width": 0.0625, "epochs": 3, "points": 5}
GPU_SCALE = {"resnet_width": 1.0, "vgg_width": 0.5, "epochs": 20, "points": 11}
METHODS = ("linear", "arc", "ot", "weight-matching", "linear+wa", "ot+wa")
BN_BATCHES = 4
WA_SAMPLES = 10000  # training samples the route's least-squares fits read (of 60000)


def networks(scale: dict) -> dict[str, tuple[str, dict, float]]:
    """Name -> (architecture, options, learning rate): ResNet-20 with BatchNorm and with LayerNorm, and VGG16."""
    width = scale["resnet_width"]
    return {
        "resnet20-bn": ("resnet20", {"width_multiplier": width, "norm": "batch"}, 0.05),
        "resnet20-ln": ("resnet20", {"width_multiplier": width, "norm": "layer"}, 0.05),
        "vgg16": ("vgg16", {"width_multiplier": scale["vgg_width"]}, 0.01),
    }


def endpoints(name: str, arch: str, options: dict, lr: float, data: Dataset, epochs: int) -> tuple[Path, Path]:
    """Two endpoints of `arch`, trained from seeds 0 and 1 once (reused while their file exists)."""
    files = []
    for seed in (0, 1):
        out = CACHE / f"{name}-{options}-e{epochs}-s{seed}.safetensors".replace(" ", "")
        if not out.exists():
            train_endpoint(arch, options, data, TrainConfig(epochs=epochs, lr=lr, seed=seed), out, progress=False)
        files.append(out)
    return files[0], files[1]


def bn_batches(network: Network) -> int | None:
    """BatchNorm networks get their statistics recomputed at every point (and the route fits on them)."""
    return BN_BATCHES if batchnorm_layers(network.model) else None


def worst_test(network: Network, path: ConnectionPath, data: Dataset, points: int, repair: bool) -> float:
    """Worst test accuracy (%) along the path; BatchNorm statistics recomputed at every point, then REPAIR."""
    fixes = point_fixes(
        network, data.x_train, bn_batches=bn_batches(network), repair_batches=REPAIR_BATCHES if repair else None
    )
    table = evaluate_path(network, path, data, points, splits=("test",), progress=False, fixes=list(fixes.values()))
    return 100 * float(table["acc"].min())


def method_rows(name: str, network: Network, thetas: tuple[Params, Params], data: Dataset, points: int) -> list[dict]:
    """Every method on the pair, unrepaired (the baseline) and repaired."""
    rows = []
    for method_name in METHODS:
        results = {}
        for repair in (False, True):
            method = get_method(method_name + ("+repair" if repair else ""))
            started = time.perf_counter()
            options = Options(progress=False, wa_samples=WA_SAMPLES, bn_batches=bn_batches(network))
            path = method.build(*thetas, Context(network, data, options))
            built = time.perf_counter() - started
            results[repair] = (
                worst_test(network, path, data, points, repair),
                built,
                time.perf_counter() - started,
                len(path),
            )
        (plain, plain_build, plain_total, legs), (fixed, _, fixed_total, _) = results[False], results[True]
        rows.append(
            {
                "name": f"{name}: {method_name}+repair, worst test accuracy %",
                "baseline": method_name,
                "value": fixed,
                "baseline_value": plain,
                "ratio": fixed / plain,
                "note": f"{legs} legs; path built in {plain_build:.1f} s; connect {plain_total:.0f} s, "
                f"with REPAIR {fixed_total:.0f} s",
            }
        )
    return rows


def rebasin_matched(model: torch.nn.Module, theta_a: Params, theta_b: Params, x: torch.Tensor) -> Params:
    """Θ^B permuted by the `rebasin` package's weight matching (its PermutationCoordinateDescent) towards Θ^A."""
    from rebasin import PermutationCoordinateDescent

    model_a, model_b = copy.deepcopy(model), copy.deepcopy(model)
    model_a.load_state_dict(theta_a)
    model_b.load_state_dict(theta_b)
    PermutationCoordinateDescent(model_a, model_b, x).rebasin()
    return {key: value.detach() for key, value in model_b.state_dict().items()}


def rebasin_rows(name: str, network: Network, thetas: tuple[Params, Params], data: Dataset, points: int) -> list[dict]:
    """Matching time and the barrier of the straight leg to the matched Θ^B: ours against rebasin's."""
    theta_a, theta_b = thetas
    ctx = Context(network, data, Options(progress=False))
    started = time.perf_counter()
    perms, _ = weight_matching_matcher("weight-matching", theta_a, theta_b, ctx)
    ours_seconds = time.perf_counter() - started
    ours = permute(theta_b, network.spec, perms)
    started = time.perf_counter()
    theirs = rebasin_matched(network.model, theta_a, theta_b, data.x_train[:2])
    theirs_seconds = time.perf_counter() - started
    x = data.x_test[:512]
    with torch.no_grad():
        reference = torch.func.functional_call(network.model, theta_b, (x,))
        drift = {
            label: float((torch.func.functional_call(network.model, params, (x,)) - reference).abs().max())
            for label, params in (("ours", ours), ("rebasin", theirs))
        }
    barriers = {
        label: worst_test(network, ConnectionPath([Leg(theta_a, params, "matched")], label), data, points, repair=False)
        for label, params in (("ours", ours), ("rebasin", theirs))
    }
    return [
        {
            "name": f"{name}: weight matching, seconds",
            "baseline": "rebasin 0.0.47 (PyPI)",
            "value": ours_seconds,
            "baseline_value": theirs_seconds,
            "ratio": theirs_seconds / ours_seconds,
            "note": f"worst test accuracy % on the straight leg to the matched Θ^B: ours {barriers['ours']:.2f}, "
            f"rebasin {barriers['rebasin']:.2f}; max logit change of the matched Θ^B: ours "
            f"{drift['ours']:.1e}, rebasin {drift['rebasin']:.1e}",
        }
    ]


def run() -> list[dict]:
    scale = GPU_SCALE if pick_device().type == "cuda" else CPU_SCALE
    data = load_dataset("fashion-mnist", download=True, device=pick_device())
    rows = []
    for name, (arch, options, lr) in networks(scale).items():
        files = endpoints(name, arch, options, lr, data, scale["epochs"])
        (model, artifact_a), (_, artifact_b) = load_model(files[0]), load_model(files[1])
        network = Network(model.to(data.x_train.device).eval())
        thetas = tuple({k: v.to(data.x_train.device) for k, v in a.tensors.items()} for a in (artifact_a, artifact_b))
        for part in (rebasin_rows, method_rows):
            for row in part(name, network, thetas, data, scale["points"]):
                print(
                    f"  {row['name']}: {row['value']:.4g} against {row['baseline_value']:.4g} · {row['note']}",
                    flush=True,
                )
                rows.append(row)
    return rows
