"""The permutation stage at paper width: incremental swap legs against a full forward pass per leg.

A random matching of 2000 units gives about 2000 swap legs. The incremental evaluation runs all of
them; the baseline (the generic engine, one forward pass per leg midpoint) runs `BASELINE_LEGS` of
them and the ratio compares time per leg. Memory: the lazy stage against two stored parameter copies
per leg.
"""

from __future__ import annotations

import torch

from benchmarks.bench_evaluate import best_time, random_setup
from lowloss.evaluate import evaluate_path
from lowloss.paths.legs import Path
from lowloss.paths.swaps import permutation_stage

WIDTH = 2000
SAMPLES = 4096
BASELINE_LEGS = 12


def nbytes(params: dict) -> int:
    return sum(t.numel() * t.element_size() for t in params.values())


def run() -> list[dict]:
    network, _, theta_b, data = random_setup((1, 28, 28), WIDTH, SAMPLES)
    perm = torch.randperm(WIDTH, generator=torch.Generator().manual_seed(1))
    stage = permutation_stage(theta_b, network.spec, "h1", perm)
    legs = stage.legs()
    incremental = best_time(lambda: evaluate_path(network, Path(legs, "ot"), data, progress=False))
    sample = Path(legs[:BASELINE_LEGS], "ot")
    full = best_time(lambda: evaluate_path(network, sample, data, progress=False, fast=False), repeats=1)
    per_leg, baseline_per_leg = incremental / len(legs), full / BASELINE_LEGS
    stage_bytes = sum(t.numel() * t.element_size() for t in (stage.positions, stage.units, stage.checkpoints))
    copies = 2 * nbytes(theta_b) * len(legs)
    return [
        {
            "name": f"swap legs, incremental ({len(legs)} legs)",
            "baseline": "full forward pass per leg",
            "value": per_leg,
            "baseline_value": baseline_per_leg,
            "ratio": baseline_per_leg / per_leg,
            "target": 50.0,
            "note": f"seconds per leg, train+test, {SAMPLES} samples, width {WIDTH}; whole stage {incremental:.2f} s; "
            f"baseline timed on {BASELINE_LEGS} legs",
        },
        {
            "name": "permutation stage memory (lazy legs)",
            "baseline": "two parameter copies per leg",
            "value": stage_bytes,
            "baseline_value": copies,
            "ratio": copies / stage_bytes,
            "note": "bytes, besides the one shared base",
        },
    ]
