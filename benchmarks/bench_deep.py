"""Deep networks at Table 2's shapes: the layered engine against one point at a time, and a deep
permutation stage against one full forward pass per swap leg.

Random weights and a random stand-in for CIFAR-10 (3 x 32 x 32; timing does not depend on the
values). Two kinds of leg: one of a route stage (§4.1: two consecutive layers change, the rest is
shared) and one of `arc`, where every layer changes. The permutation stage swaps the units of every
group of a VGG16 (reduced width on a CPU) back to B's order; its baseline evaluates `BASELINE_LEGS`
legs spread over the groups by a full forward pass each, and the ratio compares time per leg.
"""

from __future__ import annotations

import torch

from benchmarks.bench_evaluate import POINTS, best_time, one_at_a_time
from lowloss.evaluate import evaluate_path
from lowloss.methods.interpolate import arc_leg
from lowloss.methods.permutation import permutation_legs
from lowloss.nets.models import build_model
from lowloss.nets.network import Network
from lowloss.paths.legs import Leg, Path
from lowloss.training.data import Dataset
from lowloss.training.device import pick_device

SHAPE = (3, 32, 32)
CPU_SCALE = {"samples": 1024, "fc3": [2048, 1024], "conv2fc1": [32, 64], "vgg_width": 0.25, "vgg_samples": 512}
GPU_SCALE = {"samples": 10000, "fc3": [6144, 2000], "conv2fc1": [32, 64], "vgg_width": 1.0, "vgg_samples": 10000}
BASELINE_LEGS = 24


def setup(arch: str, options: dict, samples: int, seed: int = 0):
    """(network, θ_A, θ_B, dataset) of random weights and a random dataset on the device."""
    device = pick_device()
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = build_model(arch, SHAPE, 10, options).eval().to(device)
    theta_a = {k: v.detach() for k, v in model.state_dict().items()}
    theta_b = {k: (torch.randn(v.shape, generator=gen) * v.std()).to(device) for k, v in theta_a.items()}
    x = torch.randn(samples, *SHAPE, generator=gen)
    y = torch.randint(0, 10, (samples,), generator=gen)
    split = samples * 3 // 4
    return (
        Network(model),
        theta_a,
        theta_b,
        Dataset("random", x[:split], y[:split], x[split:], y[split:], 10).to(device),
    )


def stage_leg(network: Network, theta_a: dict, theta_b: dict) -> Leg:
    """A leg like a route stage's: the second and third weight layers move, everything else stays A's."""
    moving = {key for layer in network.layers[1:3] for key in layer.keys}
    end = {key: theta_b[key] if key in moving else value for key, value in theta_a.items()}
    return Leg(theta_a, end, "stage")


def leg_rows(arch: str, options: dict, samples: int) -> list[dict]:
    network, theta_a, theta_b, data = setup(arch, options, samples)
    rows = []
    for name, leg in (
        ("route-stage leg", stage_leg(network, theta_a, theta_b)),
        ("arc leg (every layer)", arc_leg(theta_a, theta_b, network.spec)),
    ):
        engine = best_time(lambda: evaluate_path(network, Path([leg], name), data, POINTS, progress=False), 2)
        baseline = best_time(lambda: one_at_a_time(network, leg, data), 2)
        rows.append(
            {
                "name": f"{arch} {options}: {name}, {POINTS} points",
                "baseline": "one point at a time",
                "value": engine,
                "baseline_value": baseline,
                "ratio": baseline / engine,
                "target": 1.5,
                "note": f"seconds, train+test, {samples} samples, {network.model.__class__.__name__}",
            }
        )
    return rows


def stage_rows(width: float, samples: int) -> list[dict]:
    network, _, theta_b, data = setup("vgg16", {"width_multiplier": width}, samples)
    gen = torch.Generator().manual_seed(1)
    perms = {group: torch.randperm(network.spec.size(theta_b, group), generator=gen) for group in network.spec.groups}
    legs = permutation_legs(theta_b, network.spec, perms)
    incremental = best_time(lambda: evaluate_path(network, Path(legs, "ot"), data, progress=False), 1)
    sample = Path(legs[:: max(1, len(legs) // BASELINE_LEGS)][:BASELINE_LEGS], "ot")
    full = best_time(lambda: evaluate_path(network, sample, data, progress=False, fast=False), 1)
    per_leg, baseline_per_leg = incremental / len(legs), full / len(sample)
    return [
        {
            "name": f"vgg16 x{width}: permutation stages of every group ({len(legs)} swap legs)",
            "baseline": "full forward pass per leg",
            "value": per_leg,
            "baseline_value": baseline_per_leg,
            "ratio": baseline_per_leg / per_leg,
            "target": 10.0,
            "note": f"seconds per leg, train+test, {samples} samples; all stages {incremental:.1f} s; baseline "
            f"timed on {len(sample)} legs spread over the groups",
        }
    ]


def run() -> list[dict]:
    scale = GPU_SCALE if pick_device().type == "cuda" else CPU_SCALE
    return (
        leg_rows("fc3", {"widths": scale["fc3"]}, scale["samples"])
        + leg_rows("conv2fc1", {"channels": scale["conv2fc1"]}, scale["samples"])
        + stage_rows(scale["vgg_width"], scale["vgg_samples"])
    )
