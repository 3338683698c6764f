"""Weight adjustment (§3.5, eq. 9–10; §4.1's W^AB): re-fit one layer by least squares so that it
reproduces target outputs from the inputs it now receives.

A dense layer's rows are its input samples; a conv layer's rows are its unfolded input patches, one
per sample and output position (`Layer.rows`), so one solver serves both. The problem [F 1] W ≈ Y is
solved through the smaller Gram matrix in float64 — FᵀF when there are more rows than columns,
else the minimum-norm W = Fᵀ(F Fᵀ)⁻¹Y that eq. (10)'s pseudo-inverse gives — by one Cholesky
factorisation with a tiny relative ridge, so dead ReLU units (zero columns) cannot make it singular.
Rows arrive batch by batch and only the Gram matrix is kept: memory is O(m²) whatever N is.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from lowloss.errors import LowlossError
from lowloss.nets.network import Layer
from lowloss.nets.params import Params

RIDGE = 1e-10  # relative to the Gram matrix's largest diagonal entry
BATCH = 4096  # samples per forward pass
ROW_BUDGET = 1 << 25  # float64 entries of one batch's rows (256 MiB): conv layers take fewer samples per batch


def _cholesky_solve(gram: Tensor, rhs: Tensor, ridge: float) -> Tensor:
    """(G + λI)⁻¹ R with λ = ridge · max diag G, growing λ until the factorisation succeeds."""
    scale = gram.diagonal().max().clamp_min(torch.finfo(gram.dtype).tiny)
    eye = torch.eye(len(gram), dtype=gram.dtype, device=gram.device)
    for _ in range(6):
        factor, info = torch.linalg.cholesky_ex(gram + ridge * scale * eye)
        if info.item() == 0:
            return torch.cholesky_solve(rhs, factor)
        ridge *= 100
    raise LowlossError("weight adjustment: the feature Gram matrix is not positive definite even with a ridge")


class LeastSquares:
    """Accumulates one least-squares problem [F 1] W ≈ Y over row batches; `solve` gives W (m (+1), C).

    While there are no more rows than columns the rows themselves are kept instead of the Gram matrix (at most
    m × m numbers): an underdetermined problem gets the minimum-norm solution from them and never needs FᵀF,
    whose m × m × N products would cost more than the solve (a layer of 2000 units fitted on digits' 1437 images).
    """

    def __init__(self, bias: bool, ridge: float = RIDGE):
        self.bias, self.ridge = bias, ridge
        self.gram: Tensor | None = None
        self.rhs: Tensor | None = None
        self.kept: list[tuple[Tensor, Tensor]] | None = []
        self.rows = 0

    def add(self, features: Tensor, targets: Tensor) -> None:
        f = features.double()
        if self.bias:
            f = torch.cat([f, f.new_ones(len(f), 1)], 1)
        y = targets.double()
        self.rows += len(f)
        if self.kept is not None:
            self.kept.append((f, y))
            if self.rows < f.shape[1]:
                return
            f, y = (torch.cat(parts) for parts in zip(*self.kept))  # enough rows: from now on, the Gram matrix
            self.kept = None
        if self.gram is None:
            self.gram = f.new_zeros(f.shape[1], f.shape[1])
            self.rhs = f.new_zeros(f.shape[1], y.shape[1])
        self.gram.addmm_(f.T, f)
        self.rhs.addmm_(f.T, y)

    def solve(self) -> Tensor:
        if not self.rows:
            raise LowlossError("weight adjustment: no samples to fit on")
        if self.kept is not None:  # fewer rows than unknowns: W = Fᵀ(F Fᵀ)⁻¹Y, the minimum norm
            f = torch.cat([part for part, _ in self.kept])
            y = torch.cat([part for _, part in self.kept])
            return f.T @ _cholesky_solve(f @ f.T, y, self.ridge)
        return _cholesky_solve(self.gram, self.rhs, self.ridge)


def solve_rows(
    features: Callable[[slice], Tensor], targets: Tensor, bias: bool, batch: int = BATCH, ridge: float = RIDGE
) -> Tensor:
    """Eq. (10) for rows F = features(rows) read in batches: W minimising ‖[F 1] W − Y‖."""
    problem = LeastSquares(bias, ridge)
    for start in range(0, len(targets), batch):
        problem.add(features(slice(start, start + batch)), targets[start : start + batch])
    return problem.solve()


def fit_layers(
    layers: Sequence[Layer],
    x: Tensor,
    inputs: Callable[[int], Sequence[Tensor]],
    targets: Callable[[int], Sequence[Tensor]],
    batch: int,
) -> list[dict[str, Tensor]]:
    """Least-squares weights of layers that read one tensor (a chain's next layer; a residual stage's next
    convs, main and shortcut), for several points at once, in one pass over x in batches of `batch` samples
    (`fit_batch`).

    `targets(start)` gives each layer's output to reproduce on the batch that starts at sample `start` (the same
    for every point); `inputs(start)` the layers' input at each point. Returns, per point, every layer's weight
    (and bias) shaped like the modules' own.
    """
    problems: list[list[LeastSquares]] | None = None
    for start in range(0, len(x), batch):
        outputs = [layer.output_rows(y) for layer, y in zip(layers, targets(start))]
        point_inputs = inputs(start)
        if problems is None:
            problems = [[LeastSquares(layer.bias is not None) for layer in layers] for _ in point_inputs]
        for point_problems, features in zip(problems, point_inputs):
            for layer, problem, y in zip(layers, point_problems, outputs):
                problem.add(layer.rows(features), y)
    return [
        {
            key: value
            for layer, problem in zip(layers, point_problems)
            for key, value in layer_tensors(layer, problem.solve()).items()
        }
        for point_problems in problems or []
    ]


def fit_layer_targets(
    layer: Layer, x: Tensor, inputs: Callable[[Tensor], Tensor], targets: Callable[[Tensor], Sequence[Tensor]]
) -> list[dict[str, Tensor]]:
    """Least-squares weights of `layer` reading one input for several targets, in one pass over x.

    The columns of [F 1] W ≈ [Y_1 … Y_K] are independent problems sharing F's Gram matrix, so K
    layers cost one accumulation and one factorisation (the WA-ensemble's members all read model 1's
    features, §6). `targets(xb)` gives the K layer outputs on a batch; returns K weight (and bias) dicts.
    """
    problem, count = LeastSquares(layer.bias is not None), 0
    batch = fit_batch([layer], inputs(x[:1]))
    for start in range(0, len(x), batch):
        xb = x[start : start + batch]
        outputs = [layer.output_rows(y) for y in targets(xb)]
        problem.add(layer.rows(inputs(xb)), torch.cat(outputs, 1))
        count = len(outputs)
    return [layer_tensors(layer, part) for part in problem.solve().chunk(count, 1)]


def fit_batch(layers: Sequence[Layer], probe: Tensor) -> int:
    """Samples per batch so that one point's rows stay within ROW_BUDGET (conv layers have many per sample), from
    the layers' input on one sample."""
    rows = max(layer.rows(probe).numel() for layer in layers)
    return max(1, min(BATCH, ROW_BUDGET // max(1, rows)))


def layer_tensors(layer: Layer, solution: Tensor) -> dict[str, Tensor]:
    """Split a solution (m (+1), C) into the layer's weight and bias, in its dtype and shape."""
    weight = layer.module.weight
    m = solution.shape[0] - (layer.bias is not None)
    out = {layer.weight: solution[:m].T.reshape(weight.shape).to(weight.dtype)}
    if layer.bias is not None:
        out[layer.bias] = solution[m].to(weight.dtype)
    return out


def replace(params: Params, tensors: dict[str, Tensor]) -> Params:
    """A copy of `params` with some tensors replaced."""
    return {**params, **{key: value.to(params[key].device) for key, value in tensors.items()}}


def fitting_samples(x: Tensor, count: int | None, seed: int) -> Tensor:
    """The N training inputs weight adjustment is fitted on: all, or a subset drawn with `seed`."""
    count = len(x) if count is None else count
    if not 0 < count <= len(x):
        raise LowlossError(f"--wa-samples must be between 1 and {len(x)} (the training set), got {count}")
    if count == len(x):
        return x
    gen = torch.Generator().manual_seed(seed)
    return x[torch.randperm(len(x), generator=gen)[:count].to(x.device)]
