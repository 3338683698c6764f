"""The cheapest good path: what a permutation-stage leg costs, what the route costs against a trained curve, what
the adaptive worst-point search saves, and how the curves' worst accuracy grows with their fitting budget.

1. One group's permutation stage on FC3, Conv2FC1 and VGG16 (random weights and a random stand-in for CIFAR-10;
   Conv2FC1 at the paper's widths, FC3 (1024-512, the paper's 6144-2000) and VGG16 (an eighth) reduced on a
   CPU): every swap leg incrementally against a full forward pass per leg (`fast=False`, timed on
   `BASELINE_LEGS` legs), seconds per leg. A stage's legs share one pass of its base, so a stage of L legs gains
   at most L× (Conv2FC1's c2 at half its width, 32 channels: 30×).
2. On the default config's digits networks (onehidden 256, fc3 256-128; endpoints of 30 epochs, one pair):
   `ot+wa`'s construction (matching + route) against fitting garipov-polychain-3 for the paper's MNIST budget, and
   both end to end, each path's evaluation at 21 points per leg included (`ot+wa`'s swap legs screened).
3. The same paths by `--points auto` against 21 points per leg: evaluations and the worst test accuracy; on fc3,
   `ot`'s permutation stages screened (`--screen-swaps`) against evaluated in full, and the worst points of both.
4. The budget table: worst train and test accuracy of the cold curve (garipov-polychain-3), the aligned one
   (aligned-polychain-3) and the route-started one (ot+wa+polychain-3) after 0, 1, 2, 5, 10, 20 epochs.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.bench_deep import setup
from benchmarks.bench_evaluate import best_time
from lowloss.evaluate import evaluate_path, worst_points
from lowloss.evaluate.swaps import GroupCut
from lowloss.methods.context import Context, Options
from lowloss.methods.curves import fit_method_curve, paper_epochs
from lowloss.methods.permutation import permutation_legs
from lowloss.methods.registry import get_method
from lowloss.nets.network import Network
from lowloss.paths.legs import Path as ConnectionPath
from lowloss.paths.swaps import SwapLeg
from lowloss.storage.atomic import write_text_atomic
from lowloss.storage.model_files import load_model
from lowloss.storage.path_table import screened
from lowloss.storage.weights import load_weights
from lowloss.training.config import TrainConfig
from lowloss.training.data import load_dataset
from lowloss.training.device import pick_device
from lowloss.training.train import train_endpoint

STAGES = {  # arch: (options on a CPU, samples, group)
    "fc3": ({"widths": [1024, 512]}, 2048, "h1"),
    "conv2fc1": ({"channels": [32, 64]}, 1024, "c2"),
    "vgg16": ({"width_multiplier": 0.125}, 256, "c7"),
}
BASELINE_LEGS = 12
DIGITS = {"onehidden": {"width": 256}, "fc3": {"widths": [256, 128]}}  # config.yaml's networks
ENDPOINT_EPOCHS = 30
METHODS = ("linear", "arc", "ot", "ot+wa", "linear+wa")
CURVES = ("garipov-polychain-3", "aligned-polychain-3", "ot+wa+polychain-3")
BUDGETS = (0, 1, 2, 5, 10, 20)
SEARCH_TABLE = Path(__file__).resolve().parent / "auto-search.md"
"""Where `run` writes the `--points auto` table (`search_table`)."""


def flops(module: torch.nn.Module, x: torch.Tensor) -> int:
    """Multiply-adds ×2 of the module's matrix products and convolutions on `x` (torch's flop counter)."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        module(x)
    return counter.get_total_flops()


def arithmetic_gain(network: Network, group: str, base: dict, x: torch.Tensor, legs: int) -> float:
    """What an incremental leg gains over a full pass in arithmetic when every sample changes: the legs share one
    pass of the base (1/legs of a full pass each), and each leg runs the layers after the group's reader in full.
    Samples whose input to the reader a leg leaves as it was skip those layers, so a stage can do better."""
    cut = GroupCut.of(network, group, base)
    after_reader = flops(cut.suffix, cut.read(cut.between(cut.own(cut.prefix(x)))))
    return 1 / (1 / legs + after_reader / flops(network.model, x))


def stage_row(arch: str) -> dict:
    options, samples, group = STAGES[arch]
    network, _, theta_b, data = setup(arch, options, samples)
    perm = torch.randperm(network.spec.size(theta_b, group), generator=torch.Generator().manual_seed(1))
    legs = permutation_legs(theta_b, network.spec, {group: perm})
    incremental = best_time(lambda: evaluate_path(network, ConnectionPath(legs, "ot"), data, progress=False), 1)
    sample = ConnectionPath(legs[:: max(1, len(legs) // BASELINE_LEGS)][:BASELINE_LEGS], "ot")
    full = best_time(lambda: evaluate_path(network, sample, data, progress=False, fast=False), 1)
    per_leg, baseline_per_leg = incremental / len(legs), full / len(sample)
    gain = arithmetic_gain(network, group, theta_b, data.x_test[:1], len(legs))
    return {
        "name": f"{arch} {options}: swap legs of group {group}, incremental ({len(legs)} legs)",
        "baseline": "full forward pass per leg",
        "value": per_leg,
        "baseline_value": baseline_per_leg,
        "ratio": baseline_per_leg / per_leg,
        "target": 50.0,
        "note": f"seconds per leg, train+test, {samples} samples of 3x32x32; stage {incremental:.1f} s; baseline "
        f"timed on {len(sample)} legs; {gain:.1f}x in arithmetic if every sample changed (the legs share one "
        f"pass of the base, and each runs the layers after the group's reader)",
    }


def endpoints(arch: str, data, folder: Path) -> Context:
    ends = [folder / f"{arch}-{seed}.safetensors" for seed in (0, 1)]
    for seed, out in enumerate(ends):
        train_endpoint(arch, DIGITS[arch], data, TrainConfig(epochs=ENDPOINT_EPOCHS, seed=seed), out, progress=False)
    (model, art_a), (_, art_b) = load_model(ends[0]), load_model(ends[1])
    return Context(Network(model.to(data.x_train.device)), data, Options(progress=False), (art_a, art_b))


def worst(ctx: Context, method: str, points) -> tuple[dict, int]:
    """(worst points by split, evaluations per split) of `method`'s path: `--points auto` searches each split on
    its own, so the count is the larger split's."""
    path = get_method(method).build(*(artifact.tensors for artifact in ctx.endpoints), ctx)
    table = evaluate_path(ctx.network, path, ctx.data, points, progress=False)
    return worst_points(table), int(table.groupby("split").size().max())


def fitted(ctx: Context, method: str, epochs: int, folder: Path, lr: float = TrainConfig.lr) -> tuple[Context, float]:
    """The context with `method`'s curve fitted for `epochs` from learning rate `lr`, and the seconds the fit took."""
    out = folder / f"{method}-{epochs}.safetensors"
    start = time.perf_counter()
    config = TrainConfig(epochs=epochs, lr=lr)
    fit_method_curve(method, *ctx.endpoints, ctx.data, config, out, ctx.options, progress=False)
    return replace(ctx, curve=load_weights(out)), time.perf_counter() - start


def digits_rows(arch: str, data, folder: Path, search: dict[tuple[str, str], str]) -> list[dict]:
    """The digits network's rows; `search` gets a cell per method for the `--points auto` table."""
    ctx = endpoints(arch, data, folder)
    thetas = [artifact.tensors for artifact in ctx.endpoints]
    path = get_method("ot+wa").build(*thetas, ctx)  # the first build also pays one-time start-up costs
    build_s = best_time(lambda: get_method("ot+wa").build(*thetas, ctx), 2)
    epochs = paper_epochs(data.name)
    curve_ctx, fit_s = fitted(ctx, "garipov-polychain-3", epochs, folder)
    route_eval = best_time(lambda: evaluate_path(ctx.network, path, data, 21, progress=False, screen_swaps=True), 1)
    curve = get_method("garipov-polychain-3").build(*thetas, curve_ctx)
    curve_eval = best_time(lambda: evaluate_path(ctx.network, curve, data, 21, progress=False), 1)
    rows = [
        {
            "name": f"digits {arch}: ot+wa construction (matching + route, {len(path)} legs)",
            "baseline": f"garipov-polychain-3 fit, {epochs} epochs",
            "value": build_s,
            "baseline_value": fit_s,
            "ratio": fit_s / build_s,
            "target": 50.0,
            "note": f"seconds; {DIGITS[arch]}, endpoints of {ENDPOINT_EPOCHS} epochs",
        },
        {
            "name": f"digits {arch}: ot+wa end to end (construction + evaluation, --screen-swaps)",
            "baseline": f"garipov-polychain-3 fit ({epochs} epochs) + evaluation",
            "value": build_s + route_eval,
            "baseline_value": fit_s + curve_eval,
            "ratio": (fit_s + curve_eval) / (build_s + route_eval),
            "target": 10.0,
            "note": f"seconds, 21 points per leg, train+test; evaluation {route_eval:.2f} s against {curve_eval:.2f} s",
        },
    ]
    contexts = {method: ctx for method in METHODS} | {"garipov-polychain-3": curve_ctx}
    for method, method_ctx in contexts.items():
        (grid, grid_n), (auto, auto_n) = worst(method_ctx, method, 21), worst(method_ctx, method, "auto")
        found, reference = (round(100 * points["test"]["acc"], 2) for points in (auto, grid))
        relation = "=" if found == reference else "<" if found < reference else ">"
        search[arch, method] = f"{auto_n} / {grid_n} ({found:.2f} {relation} {reference:.2f})"
        rows.append(
            {
                "name": f"digits {arch}: {method}, --points auto (evaluations per split)",
                "baseline": "21 points per leg",
                "value": auto_n,
                "baseline_value": grid_n,
                "ratio": grid_n / auto_n,
                "target": 2.0,
                "note": f"worst test accuracy {percent(auto, 'test')} (grid {percent(grid, 'test')}), "
                f"worst train {percent(auto, 'train')} (grid {percent(grid, 'train')})",
            }
        )
    if arch == "fc3":
        rows.append(screening_row(ctx))
    return rows + budget_rows(arch, ctx, folder)


def screening_row(ctx: Context) -> dict:
    """`ot`'s permutation stages (its swap legs alone) screened against evaluated in full, on trained endpoints:
    random weights leave most samples too close to a class boundary for the bound to certify them."""
    path = get_method("ot").build(*(artifact.tensors for artifact in ctx.endpoints), ctx)
    swaps = ConnectionPath([leg for leg in path.legs if isinstance(leg, SwapLeg)], "ot")
    tables = {}

    def evaluated(screen: bool) -> None:
        tables[screen] = evaluate_path(ctx.network, swaps, ctx.data, progress=False, screen_swaps=screen)

    full_s, screened_s = (best_time(lambda screen=screen: evaluated(screen), 2) for screen in (False, True))
    found, reference = worst_points(tables[True]), worst_points(tables[False])
    same = all(found[split]["position"] == reference[split]["position"] for split in found)
    return {
        "name": f"digits fc3: ot's permutation stages ({len(swaps)} swap legs), screened",
        "baseline": "every swap leg evaluated in full",
        "value": screened_s,
        "baseline_value": full_s,
        "ratio": full_s / screened_s,
        "target": None,
        "note": f"seconds, train+test; worst points {'the same' if same else 'DIFFERENT'} (test "
        f"{percent(found, 'test')}, train {percent(found, 'train')}); {int(screened(tables[True]).sum())} of "
        f"{len(tables[True])} rows screened",
    }


def percent(found: dict, split: str) -> str:
    return f"{100 * found[split]['acc']:.2f} %"


def budget_rows(arch: str, ctx: Context, folder: Path) -> list[dict]:
    """Per curve method: the worst accuracies after each budget, and the epochs it needs to reach the cold curve's
    worst test accuracy at the largest budget."""
    table = {}
    for method in CURVES:
        for epochs in BUDGETS:
            curve_ctx, seconds = fitted(ctx, method, epochs, folder)
            table[method, epochs] = (worst(curve_ctx, method, 21)[0], seconds)
    target = table[CURVES[0], BUDGETS[-1]][0]["test"]["acc"]
    rows = []
    for method in CURVES:
        reached = [epochs for epochs in BUDGETS if table[method, epochs][0]["test"]["acc"] >= target]
        needed = reached[0] if reached else None
        cells = "; ".join(
            f"{epochs}: {100 * found['train']['acc']:.2f}/{100 * found['test']['acc']:.2f} ({seconds:.1f} s)"
            for epochs in BUDGETS
            for found, seconds in [table[method, epochs]]
        )
        rows.append(
            {
                "name": f"digits {arch}: {method}, epochs to the cold curve's worst test accuracy at {BUDGETS[-1]}",
                "baseline": f"garipov-polychain-3: {BUDGETS[-1]} epochs",
                "value": needed,
                "baseline_value": BUDGETS[-1],
                "ratio": None if needed is None else BUDGETS[-1] / needed if needed else float("inf"),
                "target": 10.0,
                "note": f"target {100 * target:.2f} %; worst train/test accuracy (%) after epochs: {cells}",
            }
        )
    return rows


def network_label(arch: str, options: dict) -> str:
    """'fc3 256-128', 'onehidden 256': an architecture and its widths, as the docs' tables name a network."""
    return f"{arch} {'-'.join(str(width) for width in options.get('widths', [options.get('width')]))}"


def search_table(search: dict[tuple[str, str], str]) -> str:
    """`--points auto` per network and method: evaluations per split against 21 points per leg, and the worst test
    accuracy (%) found against the grid's (docs/methods.md includes it)."""
    methods = list(dict.fromkeys(method for _, method in search))
    lines = [f"| network | {' | '.join(methods)} |", f"| --- |{' --- |' * len(methods)}"]
    for arch, options in DIGITS.items():
        lines.append(f"| {network_label(arch, options)} | {' | '.join(search[arch, method] for method in methods)} |")
    return "\n".join(lines) + "\n"


def run() -> list[dict]:
    rows = [stage_row(arch) for arch in STAGES]
    data = load_dataset("digits", device=pick_device())
    search: dict[tuple[str, str], str] = {}
    with tempfile.TemporaryDirectory() as folder:
        for arch in DIGITS:
            rows += digits_rows(arch, data, Path(folder), search)
    write_text_atomic(SEARCH_TABLE, search_table(search))
    return rows
