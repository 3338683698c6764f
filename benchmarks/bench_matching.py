"""OT matching: POT's exact solver (`ot.emd`, the paper's) against SciPy's assignment solver.

Clouds of n butterfly vectors of MNIST's one-hidden net (D = 784 + 1 + 10) at n = 2000 (Table 1) and
n = 6144 (FC3's first layer): B is A shuffled plus noise. Both solvers return a permutation of equal
cost (checked in the note); the ratio is how much faster SciPy is.
"""

from __future__ import annotations

import time

import torch

from lowloss.methods.matching import ot_permutation

DIM = 784 + 1 + 10


def run() -> list[dict]:
    rows = []
    for n in (2000, 6144):
        gen = torch.Generator().manual_seed(n)
        x = torch.randn(n, DIM, generator=gen)
        y = x[torch.randperm(n, generator=gen)] + 0.5 * torch.randn(n, DIM, generator=gen)
        seconds, costs = {}, {}
        for solver in ("emd", "scipy"):
            start = time.perf_counter()
            perm = ot_permutation(x, y, solver)
            seconds[solver] = time.perf_counter() - start
            costs[solver] = float((x - y[perm]).square().sum())
        rows.append(
            {
                "name": f"OT matching, n = {n}",
                "baseline": "POT ot.emd",
                "value": seconds["scipy"],
                "baseline_value": seconds["emd"],
                "ratio": seconds["emd"] / seconds["scipy"],
                "note": f"seconds (SciPy linear_sum_assignment); costs equal: {costs['emd'] == costs['scipy']} "
                f"({costs['scipy']:.6g}); includes the cost matrix",
            }
        )
    return rows
