"""Garipov et al. (2018) learned curves, the paper's numerical baseline (§5, "Garipov (3)/(5)"), and curves between
aligned networks started on a path (Tatro et al. 2020 align neurons before fitting; here the bends may also start
on the `ot+wa` route).

A curve has control points θ_0 = Θ^A, θ_1 … θ_{k−2} (trainable bends), θ_{k−1} = Θ^B and passes
through w(t) = Σ_j c_j(t) θ_j. PolyChain's c_j are piecewise linear (a polygon through the bends),
Bezier's are the Bernstein polynomials. Unlike Garipov's code, which needs a curve version of every
layer, the unchanged network is called with `torch.func.functional_call` on w(t), so any
architecture with a spec works. Training draws t ~ U(0, 1) per minibatch and minimises
cross-entropy + (wd / 2) ||w(t)||² with the endpoint training loop (`lowloss.training.train.train`).

An aligned curve (`CurveKind.align`) runs from Θ^A to B' = Θ^B with its units put in Θ^A's order by a method's
matching, then through that matching's permutation stage to Θ^B, as the OT methods' paths do. Its bends start at
evenly spaced points of a path from Θ^A to B' (`CurveKind.start`): bend j of k − 2 at position j·L/(k − 1) along
the path's L legs. The straight segment gives Garipov et al.'s own start; a route method gives its route's points.
The curve file holds the trained bends and, for an aligned curve, the matching.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path as FilePath

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from lowloss.errors import LowlossError
from lowloss.methods.context import Context, Options
from lowloss.methods.interpolate import arc_leg
from lowloss.methods.layerwise import matched_route
from lowloss.methods.matching import PREFIX, load_matching
from lowloss.methods.permutation import permutation_legs
from lowloss.methods.registry import CURVE_STARTS, CURVES, get_method
from lowloss.nets.batchnorm import batchnorm_layers
from lowloss.nets.network import Network
from lowloss.nets.params import Params, unstack_params
from lowloss.nets.spec import permute
from lowloss.paths.legs import Leg, Path, chain
from lowloss.storage.checkpoints import checkpoint_path, config_hash, discard_checkpoint
from lowloss.storage.file_kinds import CURVE, require_meta_kind
from lowloss.storage.model_files import model_from_artifact
from lowloss.storage.weights import Artifact, save_weights
from lowloss.training.config import TrainConfig
from lowloss.training.data import Dataset
from lowloss.training.train import SCHEDULE, Objective, train

PAPER_EPOCHS = {"cifar10": 200}  # the paper's curve budgets: 200 epochs on CIFAR-10, 60 otherwise
DEFAULT_EPOCHS = 60
ALIGNED_EPOCHS = 20
"""Default epochs of an aligned curve, chosen on the training split (docs/results.md, *Worst accuracy against
fitting budget*): the smallest budget of 0, 1, 2, 5, 10, 20 whose worst train accuracy is within 0.5 points of
the 20-epoch one for both aligned curves on both digits networks (fc3's aligned-polychain-3 needs 20: 0.51
points under it at 10)."""


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


def start_bends(legs: Sequence[Leg], n_points: int) -> list[Params]:
    """The k − 2 bends' starting points on a path: bend j at position j·L/(k − 1) along its L legs (leg index + t).

    On the one leg of the straight segment Θ^A Θ^B these are Garipov et al.'s bends at t = j / (k − 1): both
    families then start as the straight line, so training only ever improves on `linear`.
    """
    bends = []
    for j in range(1, n_points - 1):
        position = j * len(legs) / (n_points - 1)
        index = min(int(position), len(legs) - 1)
        bends.append(unstack_params(legs[index].at([position - index]), 0))
    return bends


@dataclass(frozen=True)
class CurveStart:
    """Where a curve's training starts: `perms` put Θ^B's units in Θ^A's order (empty: Θ^B as it is), giving the
    curve's end `end`; `bends` are the bends' first values, `settings` what they depend on besides the endpoints
    (recorded in the curve file)."""

    perms: dict[str, torch.Tensor]
    end: Params
    bends: list[Params]
    settings: dict
    seconds: float = 0.0


def curve_start(method: str, theta_a: Params, theta_b: Params, ctx: Context) -> CurveStart:
    """The start of curve method `method`: the matching of its `align` method (the context's file, checked, else
    computed), and bends on its `start` path from Θ^A to the matched Θ^B."""
    kind = CURVES[method]
    started = time.perf_counter()
    perms, matched_on, matching_seconds = {}, None, 0.0
    if kind.align is not None:
        aligner = get_method(kind.align)
        if ctx.matching is not None:
            matched_on = aligner.matching_settings(ctx)
            perms = load_matching(ctx.matching, aligner.name, ctx, theta_b, matched_on)
            matching_seconds = ctx.matching.meta.get("seconds") or 0.0
        else:
            perms, matched_on = aligner.match(theta_a, theta_b, ctx)
    elif ctx.matching is not None:
        raise LowlossError(f"--matching applies to aligned curves, not to {method!r} (it is not aligned)")
    matched_b = permute(theta_b, ctx.spec, perms)
    if kind.start == "straight":
        legs = [Leg(theta_a, matched_b)]
    elif kind.start == "arc":
        legs = [arc_leg(theta_a, matched_b, ctx.spec)]
    else:
        if kind.align is None:
            raise LowlossError(f"{method}: a curve started on the {kind.start} route needs an alignment")
        legs = matched_route(kind.start, theta_a, theta_b, ctx, perms)
    settings = {"align": kind.align, "start": kind.start, "matched_on": matched_on}
    if kind.start not in CURVE_STARTS:
        options = ctx.options
        settings["route"] = {"wa_breakpoints": options.wa_breakpoints, "wa_samples": options.wa_samples}
    bends = start_bends(legs, kind.points)
    return CurveStart(perms, matched_b, bends, settings, matching_seconds + time.perf_counter() - started)


def is_started_elsewhere(method: str) -> bool:
    """Whether a curve method's start differs from Garipov et al.'s (aligned, or bends off the straight segment)."""
    kind = CURVES[method]
    return kind.align is not None or kind.start != "straight"


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


def default_epochs(method: str, dataset: str) -> int:
    """A curve method's default budget: the paper's for Garipov et al.'s curves, `ALIGNED_EPOCHS` for aligned ones."""
    return ALIGNED_EPOCHS if CURVES[method].align is not None else paper_epochs(dataset)


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
    start: CurveStart | None = None,
) -> dict:
    """Train the bends of a `family` curve with `n_points` control points between two endpoint files.

    SGD with the endpoint schedule (`learning_rate`); weight decay acts on w(t), not on the bends,
    so the optimizer itself gets none. Resumable from `out`'s checkpoint; same seed, same curve.
    The endpoints must share architecture and options (`lowloss.storage.model_files.load_endpoints`
    checks that for the CLI). `start` (default: Garipov et al.'s, the bends on the straight segment)
    may align Θ^B first and start the bends elsewhere; zero epochs leave them there. Saves `out` (bends,
    and the matching of an aligned curve, + sidecar) and returns the sidecar, whose `seconds` are the fit's
    compute time: its start (the matching's file's seconds included) and its epochs, resumed ones too.
    """
    if n_points < 3:
        raise LowlossError(f"a curve needs at least 3 points (one bend), got {n_points}")
    device = data.x_train.device
    net = model_from_artifact(model_a).to(device).train()  # train mode: dropout as in endpoint training
    refuse_batchnorm(net, model_a)
    theta_a, theta_b = ({k: v.to(device) for k, v in m.tensors.items()} for m in (model_a, model_b))
    produced_by = {
        "kind": CURVE,
        "curve": family,
        "points": n_points,
        "arch": model_a.meta["arch"],
        "arch_options": model_a.meta["arch_options"],
        "dataset": data.name,
        "endpoints": [model_a.meta["sha256"], model_b.meta["sha256"]],
        "train": asdict(config),
        "schedule": SCHEDULE,
    }
    perms = {}
    if start is None:
        bends = start_bends([Leg(theta_a, theta_b)], n_points)
    else:
        perms, theta_b, bends = {PREFIX + group: perm for group, perm in start.perms.items()}, start.end, start.bends
        produced_by["start"] = {**start.settings, "perms": config_hash({k: v.tolist() for k, v in perms.items()})}
    curve = Curve(family, theta_a, theta_b, bends)
    identity = config_hash(produced_by)
    history = train(
        curve,
        data,
        replace(config, weight_decay=0.0),
        checkpoint_path(out),
        identity,
        timed(on_epoch_end),
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
        "seconds": round((start.seconds if start else 0.0) + sum(row["seconds"] for row in history), 3),
    }
    save_weights(out, {**curve.bend_tensors(), **perms}, meta)
    discard_checkpoint(out)
    return meta


def timed(on_epoch_end: Callable[[int, dict], None] | None) -> Callable[[int, dict], None]:
    """An epoch-end hook that records each epoch's seconds in its history row (checkpointed with it, so a resumed
    fit counts its earlier epochs too), then calls `on_epoch_end`."""
    clock = [time.perf_counter()]

    def hook(epoch: int, row: dict) -> None:
        now = time.perf_counter()
        row["seconds"] = round(now - clock[0], 3)
        clock[0] = now
        if on_epoch_end is not None:
            on_epoch_end(epoch, row)

    return hook


def fit_method_curve(
    method: str,
    model_a: Artifact,
    model_b: Artifact,
    data: Dataset,
    config: TrainConfig,
    out: FilePath,
    options: Options | None = None,
    matching: Artifact | None = None,
    progress: bool = True,
) -> dict:
    """`fit_curve` for curve method `method` (`CURVES`), started as the method says: aligned by its `align`
    method's matching (`matching`, that method's file, else computed with `options`), its bends on its `start`
    path."""
    kind = CURVES[method]
    start = None
    if is_started_elsewhere(method) or matching is not None:
        model = model_from_artifact(model_a).to(data.x_train.device)
        refuse_batchnorm(model, model_a)
        options = options or Options(progress=progress)
        ctx = Context(Network(model), data, options, (model_a, model_b), matching=matching)
        fitted_by = get_method(method)
        if not fitted_by.applies(ctx.network.topology):
            raise LowlossError(f"method {method!r} applies to {fitted_by.applies_to}, not to {model_a.meta['arch']!r}")
        theta_a, theta_b = ({k: v.to(data.x_train.device) for k, v in m.tensors.items()} for m in (model_a, model_b))
        start = curve_start(method, theta_a, theta_b, ctx)
    return fit_curve(kind.family, kind.points, model_a, model_b, data, config, out, progress=progress, start=start)


def refuse_batchnorm(net: nn.Module, artifact: Artifact) -> None:
    """One line for endpoints with BatchNorm, whose running statistics would have to follow the curve."""
    if batchnorm_layers(net):
        raise LowlossError(
            f"{artifact.path}: Garipov curves through BatchNorm layers are not supported (the running "
            f"statistics would have to follow the curve); use endpoints with --norm layer or none"
        )


def load_curve(theta_a: Params, ctx: Context, method: str) -> tuple[list[Params], dict[str, torch.Tensor]]:
    """The bends of the fitted curve in `ctx.curve` and its matching (empty unless aligned), checked against the
    method, its start and the endpoints (sha256)."""
    kind = CURVES[method]
    artifact = ctx.curve
    meta = artifact.meta
    require_meta_kind(artifact.path, meta, CURVE)
    if (meta.get("curve"), meta.get("points")) != (kind.family, kind.points):
        raise LowlossError(
            f"{artifact.path}: is a {meta.get('curve')} curve with {meta.get('points')} points, "
            f"method {method} needs a {kind.family} curve with {kind.points}"
        )
    started = meta.get("start") or {}
    if (started.get("align"), started.get("start", "straight")) != (kind.align, kind.start):
        raise LowlossError(
            f"{artifact.path}: is a curve aligned by {started.get('align')} and started on "
            f"{started.get('start', 'straight')}, method {method} needs one aligned by {kind.align} and started "
            f"on {kind.start}"
        )
    if ctx.endpoints is not None and [e.meta.get("sha256") for e in ctx.endpoints] != meta.get("endpoints"):
        raise LowlossError(
            f"{artifact.path}: fitted on other endpoints than {ctx.endpoints[0].path} and "
            f"{ctx.endpoints[1].path} (sha256 differs)"
        )
    indices = range(1, kind.points - 1)
    spec = ctx.spec
    expected = {bend_key(i, key): tuple(theta_a[key].shape) for i in indices for key in theta_a}
    if kind.align is not None:
        expected |= {PREFIX + group: (spec.size(theta_a, group),) for group in spec.groups}
    if {key: tuple(value.shape) for key, value in artifact.tensors.items()} != expected:
        raise LowlossError(
            f"{artifact.path}: bends do not fit the endpoints' parameters "
            f"(expected {len(expected)} tensors like {next(iter(expected))!r})"
        )
    tensors = artifact.tensors
    perms = {key.removeprefix(PREFIX): value.long() for key, value in tensors.items() if key.startswith(PREFIX)}
    for group, perm in perms.items():
        if not torch.equal(perm.sort().values, torch.arange(len(perm))):
            raise LowlossError(f"{artifact.path}: {PREFIX}{group} is not a permutation of {len(perm)} units")
    bends = [{key: artifact.tensors[bend_key(i, key)].to(theta_a[key]) for key in theta_a} for i in indices]
    return bends, perms


def curve_path(method: str, theta_a: Params, theta_b: Params, ctx: Context) -> Path:
    """A fitted curve's path: a polychain's straight legs through its bends, or one Bezier leg; an aligned curve's
    then runs through its matching's permutation stage to Θ^B."""
    kind = CURVES[method]
    bends, perms = load_curve(theta_a, ctx, method)
    control = [theta_a, *bends, permute(theta_b, ctx.spec, perms)]
    if kind.family == "polychain":
        names = ["A", *(f"bend{i}" for i in range(1, kind.points - 1)), "B"]
        legs = chain(control, [f"{a}-{b}" for a, b in zip(names, names[1:])])
    else:
        bezier = lambda t: combine(control, bezier_coefficients(t, kind.points))  # noqa: E731
        legs = [Leg(theta_a, control[-1], kind.family, fn=bezier)]
    return Path(legs + permutation_legs(theta_b, ctx.spec, perms))
