"""Weight adjustment's least-squares solve (eq. 10) against NumPy's pseudo-inverse, at equal residual.

Features are ReLU activations of a random 2000-unit layer with a few dead units (the rank-deficient
case eq. 10's pseudo-inverse is there for), plus the bias column; targets are 10 logits. Both the
overdetermined case (more samples than units: normal equations) and the underdetermined one (fewer:
minimum-norm solution) are timed. The residual of each solution is reported in the note.
"""

from __future__ import annotations

import numpy as np
import torch

from benchmarks.bench_evaluate import best_time
from lowloss.methods.adjust import solve_rows

WIDTH = 2000
CASES = {"overdetermined": 8000, "underdetermined": 1500}


def features(samples: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(samples, 784, generator=gen)
    layer = torch.randn(784, WIDTH, generator=gen) / 28
    f = torch.relu(x @ layer - 0.5)
    f[:, :20] = 0  # dead units
    return f, torch.randn(samples, 10, generator=gen, dtype=torch.float64)


def run() -> list[dict]:
    rows = []
    for case, samples in CASES.items():
        f, targets = features(samples)
        ours = best_time(lambda: solve_rows(lambda r: f[r], targets, bias=True))
        w = solve_rows(lambda r: f[r], targets, bias=True)
        design = torch.cat([f, torch.ones(len(f), 1)], 1).double()  # [F 1]: the bias column
        a, y = design.numpy(), targets.numpy()
        pinv = best_time(lambda: np.linalg.pinv(a) @ y, repeats=1)
        reference = np.linalg.pinv(a) @ y
        scale = float(targets.norm())
        residual = float((design @ w - targets).norm()) / scale
        reference_residual = float(np.linalg.norm(a @ reference - y)) / scale
        rows.append(
            {
                "name": f"WA solve, {case} ({samples} samples x {WIDTH + 1} features)",
                "baseline": "numpy.linalg.pinv",
                "value": ours,
                "baseline_value": pinv,
                "ratio": pinv / ours,
                "target": 5.0,
                "note": f"seconds; relative residual ‖FW − Ŷ‖/‖Ŷ‖ {residual:.3g} (pinv: {reference_residual:.3g})",
            }
        )
    return rows
