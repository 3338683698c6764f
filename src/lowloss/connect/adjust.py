"""Weight adjustment (§3.5, eq. 9–10): move the first layer, re-fit the next one by least squares.

At K breakpoints t_k the group's incoming weights follow linear, arc or OT; the layer that reads the
group (for a one-hidden net, the output layer with its bias) is re-fitted so that the network
reproduces Ŷ^A, network A's outputs of that layer, on N training samples. The path is the polyline
Θ^A -> P(t_0) -> … -> P(t_{K-1}) -> end of the first-layer leg, plus whatever follows it (OT's
permutation stage): the two extra legs of §3.5 join the adjusted points to the true endpoints.

The least-squares problem [F 1] W ≈ Ŷ^A is solved through the smaller Gram matrix in float64
(FᵀF when N ≥ m, else F Fᵀ, the minimum-norm solution that eq. 10's pseudo-inverse gives) by one
Cholesky factorisation with a tiny relative ridge: F is accumulated over sample batches, so memory
is O(m²) whatever N is, and dead ReLU units (zero columns) cannot make the system singular.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
from torch import Tensor, nn
from torch.func import functional_call
from tqdm.auto import tqdm

from lowloss.connect.interpolate import ONE_HIDDEN, arc_leg
from lowloss.connect.path import Leg, Path, chain, unstack_params
from lowloss.connect.permutation import ot_legs
from lowloss.connect.registry import Context, one_hidden_layer, register
from lowloss.errors import LowlossError
from lowloss.spec import Params, Spec

DEFAULT_BREAKPOINTS = 5
RIDGE = 1e-10  # relative to the Gram matrix's largest diagonal entry
BATCH = 4096
FirstLayer = Callable[[Params, Params, Context], tuple[Leg, list[Leg]]]


def next_layer(model: nn.Module, spec: Spec, group: str) -> tuple[str, str, str | None]:
    """(module name, weight key, bias key or None) of the linear layer that reads `group`."""
    keys = spec.outgoing(group)
    module_name = keys[0].rsplit(".", 1)[0]
    weight_key, bias_key = f"{module_name}.weight", f"{module_name}.bias"
    if keys != [weight_key] or not isinstance(model.get_submodule(module_name), nn.Linear):
        raise LowlossError(f"weight adjustment needs one linear layer reading group {group!r}, found {keys}")
    return module_name, weight_key, bias_key if bias_key in spec.axes else None


@torch.no_grad()
def layer_io(model: nn.Module, params: Params, module_name: str, x: Tensor) -> tuple[Tensor, Tensor]:
    """Input and output of one layer when the network runs with `params` on x: (N, in), (N, out)."""
    captured = {}

    def hook(module, inputs, output):
        captured["in"], captured["out"] = inputs[0], output

    handle = model.get_submodule(module_name).register_forward_hook(hook)
    try:
        functional_call(model, params, (x,))
    finally:
        handle.remove()
    return captured["in"], captured["out"]


def with_ones(features: Tensor, bias: bool) -> Tensor:
    """[F 1] in float64 (the constant column carries the layer's bias)."""
    features = features.double()
    return torch.cat([features, features.new_ones(len(features), 1)], 1) if bias else features


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


def solve_adjustment(features: Callable[[slice], Tensor], targets: Tensor, width: int,
                     ridge: float = RIDGE, batch: int = BATCH) -> Tensor:
    """Eq. (10): W (width, C) minimising ‖F W − Ŷ‖ with F = features(rows) read in row batches.

    `width` is F's column count. N ≥ width: normal equations FᵀF W = FᵀŶ; N < width: the
    minimum-norm W = Fᵀ(F Fᵀ)⁻¹Ŷ. Both in float64 with a ridge of `ridge` relative to the scale.
    """
    n, targets = len(targets), targets.double()
    if n < width:
        f = features(slice(0, n))
        return f.T @ _cholesky_solve(f @ f.T, targets, ridge)
    gram = targets.new_zeros(width, width)
    rhs = targets.new_zeros(width, targets.shape[1])
    for start in range(0, n, batch):
        f = features(slice(start, start + batch))
        gram.addmm_(f.T, f)
        rhs.addmm_(f.T, targets[start:start + batch])
    return _cholesky_solve(gram, rhs, ridge)


def adjust(params: Params, model: nn.Module, spec: Spec, group: str, x: Tensor, targets: Tensor) -> Params:
    """`params` with the layer reading `group` re-fitted so that its outputs on x approximate `targets`."""
    module_name, weight_key, bias_key = next_layer(model, spec, group)
    inputs = layer_io(model, params, module_name, x)[0]
    solution = solve_adjustment(lambda rows: with_ones(inputs[rows], bias_key is not None), targets,
                                inputs.shape[1] + (bias_key is not None))
    weight = params[weight_key]
    out = dict(params)
    out[weight_key] = solution[:inputs.shape[1]].T.to(weight)
    if bias_key is not None:
        out[bias_key] = solution[-1].to(params[bias_key])
    return out


def adjusted_legs(first: Leg, model: nn.Module, spec: Spec, group: str, x: Tensor, breakpoints: int,
                  progress: bool = True) -> list[Leg]:
    """Θ^A -> P(t_0) -> … -> P(t_{K-1}) -> first.end, with P(t) = `first` at t with the next layer adjusted."""
    if breakpoints < 2:
        raise LowlossError(f"--wa-breakpoints must be at least 2 (got {breakpoints})")
    module_name = next_layer(model, spec, group)[0]
    targets = layer_io(model, first.start, module_name, x)[1]
    stacked = first.at(torch.linspace(0, 1, breakpoints, dtype=torch.float64))
    points = [adjust(unstack_params(stacked, k), model, spec, group, x, targets)
              for k in tqdm(range(breakpoints), desc="weight adjustment", unit="breakpoint", disable=not progress)]
    names = ["wa-start", *(f"wa-{k}" for k in range(1, breakpoints)), "wa-end"]
    return chain([first.start, *points, first.end], names)


def wa_samples(ctx: Context) -> Tensor:
    """The N training inputs the adjustment is fitted on (`wa_samples`, default all), a seeded subset."""
    if ctx.data is None:
        raise LowlossError("weight adjustment needs a dataset (--dataset)")
    x = ctx.data.x_train
    count = ctx.options.get("wa_samples")
    count = len(x) if count is None else count
    if not 0 < count <= len(x):
        raise LowlossError(f"--wa-samples must be between 1 and {len(x)} (the training set), got {count}")
    if count == len(x):
        return x
    gen = torch.Generator().manual_seed(ctx.options.get("seed") or 0)
    return x[torch.randperm(len(x), generator=gen)[:count].to(x.device)]


def rows_spec(spec: Spec, group: str) -> Spec:
    """The spec restricted to the group's incoming tensors: its butterflies are the rows of W1 (and b1)."""
    return Spec({key: spec.axes[key] for key in spec.incoming(group)})


def _linear(theta_a: Params, theta_b: Params, ctx: Context) -> tuple[Leg, list[Leg]]:
    return Leg(theta_a, theta_b, "linear"), []


def _arc(theta_a: Params, theta_b: Params, ctx: Context) -> tuple[Leg, list[Leg]]:
    group = ctx.spec.groups[0]
    return arc_leg(theta_a, theta_b, rows_spec(ctx.spec, group), group), []


FIRST_LAYERS: dict[str, tuple[FirstLayer, str]] = {
    "linear": (_linear, "first layer linear"),
    "arc": (_arc, "first layer's rows by arc (eq. 6)"),
    "ot": (ot_legs, "first layer to the OT-matched Θ^B, then the permutation stage"),
}


def wa_path(first_layer: FirstLayer, name: str, theta_a: Params, theta_b: Params, ctx: Context) -> Path:
    """Weight-adjusted path: first-layer leg with the next layer re-fitted, then the first layer's tail."""
    first, tail = first_layer(theta_a, theta_b, ctx)
    group = ctx.spec.groups[0]
    breakpoints = ctx.options.get("wa_breakpoints") or DEFAULT_BREAKPOINTS
    legs = adjusted_legs(first, ctx.model.to(ctx.device), ctx.spec, group, wa_samples(ctx), breakpoints,
                         ctx.options.get("progress", True))
    return Path([*legs, *tail], name)


def _register(first: str) -> None:
    build, what = FIRST_LAYERS[first]
    name = f"{first}+wa"
    register(name, f"{what}; output layer re-fitted by least squares at K breakpoints (§3.5)",
             applies=one_hidden_layer, applies_to=ONE_HIDDEN)(partial(wa_path, build, name))


for _first in FIRST_LAYERS:
    _register(_first)
