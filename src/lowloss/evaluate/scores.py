"""Loss and accuracy of stacked points, and the sizes and costs that plan their evaluation."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, vmap

from lowloss.nets.params import Params

MEMORY_BUDGET = 1 << 29  # bytes of activations + stacked parameters per chunk (512 MiB)
CPU_BATCH_BYTES = 1 << 27
"""Activations of one batch of a chunk's points in the layered engine on a CPU (128 MiB): the elementwise work on a
chunk's stacked activations is bound by memory, and batches whose activations stay near the caches ran the legs
of Fashion-MNIST fc3 768-384 paths a fifth faster than the 512 MiB budget's (`linear` 8.8 → 6.8–7.5 s; `ot+wa`'s
route legs, least squares included, 15.1 → 12.3 s); 64 MiB was no faster. Swap legs keep the budget's batches
(their blocks are sized on their own, and smaller batches ran them slower), and so does a GPU."""
KEPT_BYTES = 1 << 30
"""Activations over whole splits the evaluation keeps to reuse (1 GiB each time it keeps some): a chain's first layers'
outputs across the legs that share them, a screened stage's base between its screening and its full pass. What
would need more is computed again where it is needed."""
Scores = tuple[torch.Tensor, torch.Tensor]
"""Mean cross-entropy and accuracy, one entry per point."""


def activation_elements(model: nn.Module, input_shape: Sequence[int]) -> int:
    """Numbers produced by all leaf modules for one sample (a proxy for activation memory)."""
    total = 0

    def count(module, inputs, output):
        nonlocal total
        total += output.numel()

    leaves = [m for m in model.modules() if not list(m.children())]
    handles = [m.register_forward_hook(count) for m in leaves]
    try:
        with torch.no_grad():
            device = next(model.parameters()).device
            model(torch.zeros(1, *input_shape, device=device))
    finally:
        for handle in handles:
            handle.remove()
    return max(total, 1)


def chunk_sizes(
    model: nn.Module, input_shape: Sequence[int], n_points: int, budget: int = MEMORY_BUDGET
) -> tuple[int, int]:
    """(points per chunk, samples per batch) that keep one chunk within `budget` bytes."""
    n_params = sum(p.numel() for p in model.parameters())
    points = max(1, min(n_points, budget // (4 * n_params * 2)))
    return points, batch_size(model, input_shape, points, budget)


def batch_size(model: nn.Module, input_shape: Sequence[int], points: int, budget: int) -> int:
    """Samples per batch that keep the activations of `points` points within `budget` bytes."""
    per_sample = 4 * 3 * activation_elements(model, input_shape)
    return max(1, budget // (per_sample * points))


def mean_scores(logits_batches: Iterable[torch.Tensor], y: torch.Tensor) -> Scores:
    """Mean cross-entropy and accuracy per point from (T, B, C) logits of consecutive batches of y."""
    loss_sum = correct = 0
    start = 0
    for logits in logits_batches:
        yb = y[start : start + logits.shape[1]]
        start += logits.shape[1]
        losses = F.cross_entropy(logits.flatten(0, 1), yb.repeat(len(logits)), reduction="none")
        loss_sum = loss_sum + losses.view(len(logits), -1).sum(1).double()
        correct = correct + (logits.argmax(-1) == yb).sum(1).double()
    return loss_sum / len(y), correct / len(y)


@torch.no_grad()
def evaluate_stacked(model: nn.Module, stacked: Params, x: torch.Tensor, y: torch.Tensor, batch: int) -> Scores:
    """Mean cross-entropy and accuracy for each of the T stacked parameter sets: two (T,) tensors."""

    def logits_of(params: Params, inputs: torch.Tensor) -> torch.Tensor:
        return functional_call(model, params, (inputs,))

    batched = vmap(logits_of, in_dims=(0, None))
    return mean_scores((batched(stacked, x[start : start + batch]) for start in range(0, len(x), batch)), y)


def low_rank(rows: torch.Tensor, tol: float = 1e-12, lead: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """rows[lead:] (T, P) = coeffs (T, r) @ basis (r, P), r the numerical rank (eigenvalues of the Gram > tol·max),
    the basis r of the rows themselves: the `lead` rows before the points (a leg's ends), which need no
    coefficients of their own, first where they lie in the points' span.

    A straight leg has rank 2, an arc or a quadratic Bezier curve rank 3, whatever T is. The discarded
    directions are below float32 rounding of the rows. The basis rows are picked greedily, each the row least
    explained by those before (the first row first), and their coefficients are exactly the identity: a point
    that is a basis row is evaluated as itself, and what was computed for a basis row (a leg's end, the next
    leg's start) is what the evaluation can reuse. Points of full rank (a learned ν's path) are their own
    basis. The factoring works on the Gram matrix of the rows scaled to unit length: rows of very different
    norms (a ν whose inverse overshoots between the endpoints) would otherwise lose the small ones in the large
    ones' rounding.
    """
    m = rows.double()
    raw = m @ m.T
    norms = raw.diagonal().sqrt().clamp_min(torch.finfo(m.dtype).tiny)[:, None]
    gram = raw / (norms * norms.T)
    rank, top = numerical_rank(gram[lead:, lead:], tol)
    if lead and numerical_rank(gram, tol)[0] > rank:  # the lead rows leave the points' span: no basis for them
        return low_rank(rows[lead:], tol)
    count = len(rows) - lead
    if rank >= count:
        return torch.eye(count, device=rows.device), rows[lead:].float()
    residual, picked = gram.clone(), []
    for _ in range(rank):  # pivoted Cholesky of the Gram: the row with the largest residual next
        pick = int(residual.diagonal().argmax()) if picked else 0
        if residual[pick, pick] <= tol * top:  # what is left is rounding
            break
        picked.append(pick)
        residual -= torch.outer(residual[:, pick], residual[pick]) / residual[pick, pick]
    unit_coeffs = torch.linalg.solve(gram[picked][:, picked], gram[picked]).T  # unit rows = coeffs @ unit[picked]
    coeffs = norms * unit_coeffs / norms[picked].T
    coeffs[picked] = torch.eye(len(picked), dtype=coeffs.dtype, device=coeffs.device)
    return coeffs[lead:].float(), rows[picked]


def numerical_rank(gram: torch.Tensor, tol: float) -> tuple[int, float]:
    """How many eigenvalues of a Gram matrix exceed tol times the largest, and the largest."""
    eigval = torch.linalg.eigvalsh(gram)
    top = float(eigval[-1].clamp_min(torch.finfo(gram.dtype).tiny))
    return int((eigval > tol * top).sum()), top


def flops_per_point(model: nn.Module, input_shape: Sequence[int]) -> float:
    """Approximate forward FLOPs of one sample (2 x multiply-adds of linear and conv layers)."""
    return sum(layer_flops(model, input_shape).values())


def layer_flops(model: nn.Module, input_shape: Sequence[int]) -> dict[str, float]:
    """`flops_per_point` per linear and conv layer, by module name (what a shared backbone saves)."""
    flops: dict[str, float] = {}

    def count(name: str, module: nn.Module, output: torch.Tensor) -> None:
        if isinstance(module, nn.Linear):
            flops[name] = flops.get(name, 0.0) + 2 * module.in_features * module.out_features
        else:
            flops[name] = flops.get(name, 0.0) + 2 * math.prod(module.weight.shape[1:]) * output.numel()

    handles = [
        m.register_forward_hook(lambda module, inputs, output, name=name: count(name, module, output))
        for name, m in model.named_modules()
        if isinstance(m, (nn.Linear, nn.Conv2d))
    ]
    try:
        with torch.no_grad():
            model(torch.zeros(1, *input_shape, device=next(model.parameters()).device))
    finally:
        for handle in handles:
            handle.remove()
    return flops
