"""Garipov et al. (2018) learned curves, the paper's numerical baseline (§5, "Garipov (3)/(5)").

A curve has control points θ_0 = Θ^A, θ_1 … θ_{k−2} (trainable bends), θ_{k−1} = Θ^B and passes
through w(t) = Σ_j c_j(t) θ_j. PolyChain's c_j are piecewise linear (a polygon through the bends),
Bezier's are the Bernstein polynomials. Unlike Garipov's code, which needs a curve version of every
layer, the unchanged network is called with `torch.func.functional_call` on w(t), so any
architecture with a spec works. Training draws t ~ U(0, 1) per minibatch and minimises
cross-entropy + (wd / 2) ||w(t)||² with the endpoint training loop (`lowloss.training.train.train`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, replace
from pathlib import Path as FilePath

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from lowloss.errors import LowlossError
from lowloss.methods.context import Context
from lowloss.methods.registry import CURVES
from lowloss.nets.batchnorm import batchnorm_layers
from lowloss.nets.params import Params, unstack_params
from lowloss.paths.legs import Leg, Path, chain, interpolate
from lowloss.storage.checkpoints import checkpoint_path, config_hash, discard_checkpoint
from lowloss.storage.file_kinds import CURVE, require_meta_kind
from lowloss.storage.model_files import model_from_artifact
from lowloss.storage.weights import Artifact, save_weights
from lowloss.training.config import TrainConfig
from lowloss.training.data import Dataset
from lowloss.training.train import Objective, train

PAPER_EPOCHS = {"cifar10": 200}  # the paper's curve budgets: 200 epochs on CIFAR-10, 60 otherwise
DEFAULT_EPOCHS = 60


def polychain_coefficients(t: torch.Tensor, n_points: int) -> torch.Tensor:
    """(T, k) PolyChain weights: c_j(t) = max(0, 1 − |t (k − 1) − j|), the polygon through the bends."""
    s = t.reshape(-1, 1) * (n_points - 1)
    j = torch.arange(n_points, dtype=t.dtype, device=t.device)
    return (1 - (s - j).abs()).clamp_min(0)


def bezier_coefficients(t: torch.Tensor, n_points: int) -> torch.Tensor:
    """(T, k) Bernstein weights: c_j(t) = C(k − 1, j) t^j (1 − t)^(k − 1 − j)."""
    t = t.reshape(-1, 1)
    j = torch.arange(n_points, dtype=t.dtype, device=t.device)
    binomials = torch.tensor([math.comb(n_points - 1, i) for i in range(n_points)], dtype=t.dtype, device=t.device)
    return binomials * t**j * (1 - t) ** (n_points - 1 - j)


COEFFICIENTS: dict[str, Callable[[torch.Tensor, int], torch.Tensor]] = {
    "polychain": polychain_coefficients,
    "bezier": bezier_coefficients,
}


def combine(control: Sequence[Params], coeffs_t: torch.Tensor) -> Params:
    """Stacked w(t) = Σ_j c_j(t) θ_j for a (T, k) coefficient matrix: one leading axis of T points."""
    out = {}
    for key, first in control[0].items():
        points = torch.stack([theta[key] for theta in control])
        out[key] = torch.tensordot(coeffs_t.to(first), points, dims=1)
    return out


def linear_bends(theta_a: Params, theta_b: Params, n_points: int) -> list[Params]:
    """Bends initialised on the segment Θ^A Θ^B at t = j / (k − 1), as in Garipov et al.

    Both families then start as the straight line, so training only ever improves on `linear`.
    """
    ts = torch.arange(1, n_points - 1, dtype=torch.float64) / (n_points - 1)
    stacked = interpolate(theta_a, theta_b, ts)
    return [unstack_params(stacked, i) for i in range(n_points - 2)]


def bend_key(index: int, key: str) -> str:
    """File key of bend `index` (1 … k − 2) of parameter `key`: `bend1/fc1.weight`."""
    return f"bend{index}/{key}"


class Curve(nn.Module):
    """A curve family with its control points; only the bends are parameters.

    The endpoints are plain tensors, never registered, so no optimizer, state dict or checkpoint
    holds them and they stay fixed. Build the module on the device it will run on.
    """

    def __init__(self, family: str, theta_a: Params, theta_b: Params, bends: Sequence[Params]):
        super().__init__()
        if family not in COEFFICIENTS:
            raise LowlossError(f"unknown curve family {family!r} (known: {', '.join(COEFFICIENTS)})")
        self.family = family
        self.keys = list(theta_a)
        self.theta_a, self.theta_b = theta_a, theta_b
        self.bends = nn.ModuleList(
            nn.ParameterList(nn.Parameter(bend[key].detach().clone()) for key in self.keys) for bend in bends
        )

    @property
    def n_points(self) -> int:
        return len(self.bends) + 2

    def control_points(self) -> list[Params]:
        """[Θ^A, θ_1, …, θ_{k−2}, Θ^B]; the bends are the live parameters."""
        bends = [dict(zip(self.keys, bend)) for bend in self.bends]
        return [self.theta_a, *bends, self.theta_b]

    def forward(self, t: torch.Tensor) -> Params:
        """Stacked w(t) for a vector of t (the caller draws t)."""
        return combine(self.control_points(), COEFFICIENTS[self.family](t, self.n_points))

    def bend_tensors(self) -> dict[str, torch.Tensor]:
        """The bends under their file keys, for `save_weights`."""
        return {
            bend_key(i, key): value.detach()
            for i, bend in enumerate(self.control_points()[1:-1], start=1)
            for key, value in bend.items()
        }


def curve_objective(net: nn.Module, curve: Curve, weight_decay: float) -> Objective:
    """Garipov et al.'s loss at one random point: CE(f(x; w(t)), y) + (wd / 2) ||w(t)||², t ~ U(0, 1)."""

    def objective(x: torch.Tensor, y: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        t = torch.rand(1, generator=generator, dtype=torch.float64).to(x.device)
        theta_t = unstack_params(curve(t), 0)
        logits = functional_call(net, theta_t, (x,))
        l2 = sum(w.pow(2).sum() for w in theta_t.values())
        return F.cross_entropy(logits, y) + 0.5 * weight_decay * l2, logits

    return objective


def paper_epochs(dataset: str) -> int:
    """The paper's curve-training budget for `dataset` (§5: 200 epochs on CIFAR-10, 60 on MNIST)."""
    return PAPER_EPOCHS.get(dataset, DEFAULT_EPOCHS)


def fit_curve(
    family: str,
    n_points: int,
    model_a: Artifact,
    model_b: Artifact,
    data: Dataset,
    config: TrainConfig,
    out: FilePath,
    on_epoch_end: Callable[[int, dict], None] | None = None,
    progress: bool = True,
) -> dict:
    """Train the bends of a `family` curve with `n_points` control points between two endpoint files.

    SGD with the endpoint schedule (`learning_rate`); weight decay acts on w(t), not on the bends,
    so the optimizer itself gets none. Resumable from `out`'s checkpoint; same seed, same curve.
    The endpoints must share architecture and options (`lowloss.storage.model_files.load_endpoints`
    checks that for the CLI). Saves `out` (bends + sidecar) and returns the sidecar.
    """
    if n_points < 3:
        raise LowlossError(f"a curve needs at least 3 points (one bend), got {n_points}")
    device = data.x_train.device
    net = model_from_artifact(model_a).to(device).train()  # train mode: dropout as in endpoint training
    if batchnorm_layers(net):
        raise LowlossError(
            f"{model_a.path}: Garipov curves through BatchNorm layers are not supported (the running "
            f"statistics would have to follow the curve); use endpoints with --norm layer or none"
        )
    theta_a, theta_b = ({k: v.to(device) for k, v in m.tensors.items()} for m in (model_a, model_b))
    curve = Curve(family, theta_a, theta_b, linear_bends(theta_a, theta_b, n_points))
    produced_by = {
        "kind": CURVE,
        "curve": family,
        "points": n_points,
        "arch": model_a.meta["arch"],
        "arch_options": model_a.meta["arch_options"],
        "dataset": data.name,
        "endpoints": [model_a.meta["sha256"], model_b.meta["sha256"]],
        "train": asdict(config),
    }
    identity = config_hash(produced_by)
    history = train(
        curve,
        data,
        replace(config, weight_decay=0.0),
        checkpoint_path(out),
        identity,
        on_epoch_end,
        progress,
        objective=curve_objective(net, curve, config.weight_decay),
        desc=f"fitting {family}",
    )
    meta = {
        **produced_by,
        "endpoint_files": [str(model_a.path), str(model_b.path)],
        "seed": config.seed,
        "epochs": config.epochs,
        "config_hash": identity,
        "history": history,
    }
    save_weights(out, curve.bend_tensors(), meta)
    discard_checkpoint(out)
    return meta


def load_bends(theta_a: Params, ctx: Context, method: str) -> list[Params]:
    """The bends of the fitted curve in `ctx.curve`, checked against the method and the endpoints (sha256)."""
    family, n_points = CURVES[method]
    artifact = ctx.curve
    meta = artifact.meta
    require_meta_kind(artifact.path, meta, CURVE)
    if (meta.get("curve"), meta.get("points")) != (family, n_points):
        raise LowlossError(
            f"{artifact.path}: is a {meta.get('curve')} curve with {meta.get('points')} points, "
            f"method {method} needs a {family} curve with {n_points}"
        )
    if ctx.endpoints is not None and [e.meta.get("sha256") for e in ctx.endpoints] != meta.get("endpoints"):
        raise LowlossError(
            f"{artifact.path}: fitted on other endpoints than {ctx.endpoints[0].path} and "
            f"{ctx.endpoints[1].path} (sha256 differs)"
        )
    indices = range(1, n_points - 1)
    expected = {bend_key(i, key): tuple(theta_a[key].shape) for i in indices for key in theta_a}
    if {key: tuple(value.shape) for key, value in artifact.tensors.items()} != expected:
        raise LowlossError(
            f"{artifact.path}: bends do not fit the endpoints' parameters "
            f"(expected {len(expected)} tensors like {next(iter(expected))!r})"
        )
    return [{key: artifact.tensors[bend_key(i, key)].to(theta_a[key]) for key in theta_a} for i in indices]


def curve_path(method: str, theta_a: Params, theta_b: Params, ctx: Context) -> Path:
    """A fitted curve's path: a polychain's straight legs through its bends, or one Bezier leg."""
    family, n_points = CURVES[method]
    control = [theta_a, *load_bends(theta_a, ctx, method), theta_b]
    if family == "polychain":
        names = ["A", *(f"bend{i}" for i in range(1, n_points - 1)), "B"]
        return Path(chain(control, [f"{a}-{b}" for a, b in zip(names, names[1:])]))
    return Path([Leg(theta_a, theta_b, family, fn=lambda t: combine(control, bezier_coefficients(t, n_points)))])
