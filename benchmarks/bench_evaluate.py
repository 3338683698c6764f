"""Path evaluation: many points of a leg at once against one point at a time, and GFLOP/s against a matmul.

Paper-scale shapes (784 inputs, 2000 hidden units, 10 classes, 21 points per leg) on random weights
and a random stand-in for MNIST of `SAMPLES` images (timing does not depend on the values); plus the
digits scale of the tests. The baseline evaluates each t with its own functional call over the data.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

from lowloss.evaluate import evaluate_path, leg_ts
from lowloss.evaluate.scores import chunk_sizes, evaluate_stacked, flops_per_point
from lowloss.methods.interpolate import arc_leg
from lowloss.nets.models import build_model
from lowloss.nets.network import Network
from lowloss.paths.legs import Leg, Path
from lowloss.training.data import Dataset
from lowloss.training.device import pick_device

POINTS = 21
SAMPLES = 8192
BATCH = 1024


def best_time(fn: Callable[[], object], repeats: int = 2) -> float:
    """Smallest wall time of `repeats` calls (the machine is shared: the minimum is the least disturbed)."""
    best = float("inf")
    for _ in range(repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best


def random_setup(shape: tuple[int, ...], width: int, samples: int, seed: int = 0):
    """(network, θ_A, θ_B, dataset) with random weights and a random dataset of `samples` images on the device."""
    device = pick_device()
    gen = torch.Generator().manual_seed(seed)
    model = build_model("onehidden", shape, 10, {"width": width}).eval()
    theta_a = {k: v.detach().to(device) for k, v in model.state_dict().items()}
    theta_b = {k: (torch.randn(v.shape, generator=gen) * v.std()).to(device) for k, v in theta_a.items()}
    x = torch.randn(samples, *shape, generator=gen)
    y = torch.randint(0, 10, (samples,), generator=gen)
    split = samples * 3 // 4
    data = Dataset("random", x[:split], y[:split], x[split:], y[split:], 10).to(device)
    return Network(model.to(device)), theta_a, theta_b, data


def one_at_a_time(network: Network, leg: Leg, data: Dataset) -> None:
    """The baseline: every t its own pass over both splits."""
    for t in leg_ts(leg, POINTS):
        point = leg.at([t])
        for split in ("train", "test"):
            evaluate_stacked(network.model, point, *data.split(split), batch=BATCH)


def matmul_gflops(rows: int, inner: int, cols: int, repeats: int) -> float:
    """GFLOP/s of a plain float32 matmul (rows × inner) @ (inner × cols) on this machine."""
    device = pick_device()
    a, b = torch.randn(rows, inner, device=device), torch.randn(inner, cols, device=device)
    seconds = best_time(lambda: [a @ b for _ in range(repeats)], 5)
    return 2 * rows * inner * cols * repeats / seconds / 1e9


def leg_rows(label: str, shape: tuple[int, ...], width: int, samples: int, repeats: int) -> list[dict]:
    network, theta_a, theta_b, data = random_setup(shape, width, samples)
    legs = {"linear": Leg(theta_a, theta_b, "linear"), "arc": arc_leg(theta_a, theta_b, network.spec)}
    rows = []
    for name, leg in legs.items():
        path = Path([leg], name)
        engine = best_time(lambda: evaluate_path(network, path, data, POINTS, progress=False), repeats)
        baseline = best_time(lambda: one_at_a_time(network, leg, data), repeats)
        rows.append(
            {
                "name": f"{label}: {name} leg, {POINTS} points together",
                "baseline": "one point at a time",
                "value": engine,
                "baseline_value": baseline,
                "ratio": baseline / engine,
                "target": 3.0,
                "note": f"seconds; width {width}, {samples} samples",
            }
        )
    generic = best_time(
        lambda: evaluate_path(network, Path([legs["arc"]], "arc"), data, POINTS, progress=False, fast=False), repeats
    )
    rows.append(
        {
            "name": f"{label}: arc leg, generic vmapped engine (fast=False)",
            "baseline": "one point at a time",
            "value": generic,
            "baseline_value": rows[-1]["baseline_value"],
            "ratio": rows[-1]["baseline_value"] / generic,
            "note": "what networks without the one-hidden form get",
        }
    )
    nominal = POINTS * samples * flops_per_point(network.model, shape) / 1e9
    points, batch = chunk_sizes(network.model, shape, POINTS)
    matmul = matmul_gflops(min(batch, samples), int(torch.tensor(shape).prod()), width, repeats=POINTS)
    for name, seconds in (("fast", rows[1]["value"]), ("generic", generic)):
        rows.append(
            {
                "name": f"{label}: GFLOP/s of path evaluation ({name}, arc leg)",
                "baseline": "plain matmul",
                "value": nominal / seconds,
                "baseline_value": matmul,
                "ratio": nominal / seconds / matmul,
                "note": "nominal FLOPs (every point's full forward pass) / time; the fast path skips "
                "first-layer products, so it can pass 1"
                if name == "fast"
                else "GFLOP/s",
            }
        )
    return rows


def run() -> list[dict]:
    return leg_rows("MNIST shapes", (1, 28, 28), 2000, SAMPLES, 2) + leg_rows("digits", (1, 8, 8), 512, 1797, 7)
