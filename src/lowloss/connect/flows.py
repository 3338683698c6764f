"""Learnable bijections ν for the generalised arc, eq. (7): RealNVP / IAF Flow and RealNVP Bijection (§3.3).

ν maps a hidden unit's butterfly vector (standardised with the model set's statistics) to a latent
space where the plain arc of Proposition 1 is used; ψ(t) = ν⁻¹[cos(πt/2) ν(X) + sin(πt/2) ν(Y)].
The transforms are nflows' and keep its contract: `forward` = ν (neuron -> latent) and `inverse` = ν⁻¹,
each returning (outputs, logabsdet).

* `realnvp`: affine couplings (Dinh et al., 2016), one network pass per layer in both directions.
* `iaf`: inverse autoregressive flow (Kingma et al., 2016): ν⁻¹ is one MADE pass per layer, ν is the
  sequential (triangular) solve. Eq. (7) evaluates ν on the 2n endpoint neurons once per connection
  and ν⁻¹ on n neurons at every path point, so the cheap direction is the one used most. The solve
  costs up to D MADE passes per layer (D ≈ 795 for MNIST); `solve_autoregressive` stops as soon as
  the fixed-point iteration stops changing, which is exact for a triangular system. Flow training
  differentiates through those passes (memory ∝ passes × batch), which is why IAF Bijection, which
  would need that on every step, is not offered (as in the paper).

Every layer starts at unit scale and zero shift, so a fresh ν is standardisation followed by a
permutation of coordinates, an affine map: the generalised arc through it is exactly the arc
connection, eq. (6), around V's mean. Fitting therefore starts from Arc.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path as FilePath

import torch
import torch.nn.functional as F
from nflows.distributions.normal import StandardNormal
from nflows.nn.nets import ResidualNet
from nflows.transforms.autoregressive import MaskedAffineAutoregressiveTransform
from nflows.transforms.base import CompositeTransform, InverseTransform, Transform
from nflows.transforms.coupling import AffineCouplingTransform
from nflows.transforms.permutations import RandomPermutation
from nflows.utils.torchutils import create_alternating_binary_mask
from torch import nn
from torch.func import functional_call
from tqdm.auto import tqdm

from lowloss.artifacts import Artifact, ArtifactError, save_weights
from lowloss.checkpoints import checkpoint_path, config_hash, discard_checkpoint, epoch_generator, resumable_checkpoint
from lowloss.connect.interpolate import ONE_HIDDEN, butterfly_leg, generalised_arc
from lowloss.connect.neurons import butterflies
from lowloss.connect.path import Leg, Path, unstack_params
from lowloss.connect.registry import Build, Context, one_hidden_layer, register
from lowloss.data import Dataset, augment_batch
from lowloss.errors import LowlossError
from lowloss.evaluate import evaluate_stacked
from lowloss.models import build_model
from lowloss.modelset import ModelSet
from lowloss.spec import Params, Spec

logger = logging.getLogger(__name__)

OPTIMIZER_PREFIX = "optimizer::"
STD_FLOOR = 1e-6
LAYERS, HIDDEN = 6, 128
"""Default ν: coupling / autoregressive layers, and the hidden width of their conditioner networks."""
SCALE_EPS = 1e-3
UNIT_SCALE = math.log(math.expm1(1 - SCALE_EPS))
"""softplus⁻¹(1 − ε): the scale softplus(u) + ε of nflows' autoregressive transform is 1 at u = UNIT_SCALE."""


@dataclass(frozen=True)
class FlowShape:
    """Hyper-parameters that rebuild ν: its type, coupling/autoregressive layers, hidden width, D."""

    type: str
    layers: int
    hidden: int
    features: int


def solve_autoregressive(transform: MaskedAffineAutoregressiveTransform,
                         outputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Inputs x with transform(x) = outputs, by fixed-point iteration; returns (x, logabsdet, passes).

    nflows' own inverse always runs D passes. Each pass fixes at least one more coordinate of the
    triangular system, and once a pass leaves the iterate unchanged (bit for bit) it is the
    solution, so stopping there is exact and usually needs far fewer than D passes.
    """
    inputs = torch.zeros_like(outputs)
    logabsdet = None
    for passes in range(1, outputs.shape[1] + 1):
        params = transform.autoregressive_net(inputs)
        new, logabsdet = transform._elementwise_inverse(outputs, params)  # nflows' subclass hook
        converged = torch.equal(new, inputs)
        inputs = new
        if converged:
            break
    return inputs, logabsdet, passes


class FixedPointMAF(MaskedAffineAutoregressiveTransform):
    """nflows' masked affine autoregressive transform with an early-stopping inverse."""

    def inverse(self, inputs: torch.Tensor, context=None) -> tuple[torch.Tensor, torch.Tensor]:
        outputs, logabsdet, _ = solve_autoregressive(self, inputs)
        return outputs, logabsdet


class UnitAffineCoupling(AffineCouplingTransform):
    """nflows' affine coupling with its autoregressive transform's scale, softplus(u) + ε, at 1 for u = 0.

    nflows' coupling scale, sigmoid(u + 2) + ε, never exceeds 1 + ε: every layer can only contract,
    and a stack of them cannot Gaussianise a skewed distribution (see the lognormal test).
    """

    def _scale_and_shift(self, transform_params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        unconstrained_scale = transform_params[:, self.num_transform_features:, ...]
        shift = transform_params[:, :self.num_transform_features, ...]
        return F.softplus(unconstrained_scale + UNIT_SCALE) + SCALE_EPS, shift


def _zero_last(layer: nn.Linear) -> None:
    nn.init.zeros_(layer.weight)
    nn.init.zeros_(layer.bias)


def _coupling_net(hidden: int):
    """Conditioner factory `(in_features, out_features) -> module` whose output starts at zero."""
    def create(in_features: int, out_features: int) -> nn.Module:
        net = ResidualNet(in_features, out_features, hidden_features=hidden, num_blocks=2)
        _zero_last(net.final_layer)
        return net

    return create


def realnvp_layers(shape: FlowShape) -> list[Transform]:
    """Random permutation + affine coupling, `layers` times (masks alternate)."""
    layers: list[Transform] = []
    for i in range(shape.layers):
        mask = create_alternating_binary_mask(shape.features, even=i % 2 == 0)
        layers += [RandomPermutation(shape.features), UnitAffineCoupling(mask, _coupling_net(shape.hidden))]
    return layers


def iaf_layers(shape: FlowShape) -> list[Transform]:
    """Random permutation + IAF layer, `layers` times: ν⁻¹ of each layer is one MADE pass."""
    layers: list[Transform] = []
    for _ in range(shape.layers):
        maf = FixedPointMAF(shape.features, shape.hidden, num_blocks=2)
        final = maf.autoregressive_net.final_layer
        _zero_last(final)
        with torch.no_grad():  # outputs interleave (scale, shift) per feature; scale starts at exactly 1
            final.bias[0::2] = UNIT_SCALE
        layers += [RandomPermutation(shape.features), InverseTransform(maf)]
    return layers


BUILDERS = {"realnvp": realnvp_layers, "iaf": iaf_layers}


class Bijection(nn.Module):
    """ν = flow ∘ standardise, on (…, D) tensors; the standardisation statistics are buffers.

    `forward(x)` = ν(x) and `inverse(z)` = ν⁻¹(z) keep any leading dimensions; `log_prob(x)` is the
    Flow objective, log η(ν(x)) + log|det ∂ν/∂x| with η the standard normal density.
    """

    def __init__(self, shape: FlowShape, mean: torch.Tensor | None = None, std: torch.Tensor | None = None):
        super().__init__()
        if shape.type not in BUILDERS:
            raise LowlossError(f"unknown flow type {shape.type!r} (known: {', '.join(BUILDERS)})")
        if shape.layers < 1 or shape.hidden < 1 or shape.features < 2:
            raise LowlossError(f"flow needs layers >= 1, hidden >= 1 and D >= 2, got {shape}")
        self.shape = shape
        self.register_buffer("mean", torch.zeros(shape.features) if mean is None else mean.detach().clone())
        self.register_buffer("std", torch.ones(shape.features) if std is None else std.detach().clamp_min(STD_FLOOR))
        self.transform = CompositeTransform(BUILDERS[shape.type](shape))
        self.base = StandardNormal([shape.features])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z, _ = self.transform((self._flat(x) - self.mean) / self.std)
        return z.reshape(x.shape)

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        x, _ = self.transform.inverse(self._flat(z))
        return x.reshape(z.shape) * self.std + self.mean

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """(N,) log-density of the rows of x (N, D) under ν's pull-back of the standard normal."""
        z, logabsdet = self.transform((x - self.mean) / self.std)
        return self.base.log_prob(z) + logabsdet - self.std.log().sum()

    def _flat(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.shape.features:
            raise LowlossError(f"ν takes vectors of {self.shape.features} numbers, got shape {tuple(x.shape)}")
        return x.reshape(-1, self.shape.features)


# --- the three learned methods: which ν, which training procedure -------------------------------

METHODS = {"realnvp-flow": ("realnvp", "flow"), "iaf-flow": ("iaf", "flow"),
           "realnvp-bijection": ("realnvp", "bijection")}
DESCRIPTIONS = {
    "realnvp-flow": "generalised arc, eq. (7), through a RealNVP ν fitted by likelihood on V's neurons",
    "iaf-flow": "generalised arc, eq. (7), through an IAF ν fitted by likelihood on V's neurons",
    "realnvp-bijection": "generalised arc, eq. (7), through a RealNVP ν fitted to V's midpoint loss, eq. (8)",
}


@dataclass(frozen=True)
class FitConfig:
    """How ν is fitted. `batch_size` counts neurons (Flow) or training samples (Bijection)."""

    steps: int = 2000
    lr: float = 1e-3
    batch_size: int = 256
    seed: int = 0
    t_uniform: bool = False
    checkpoint_every: int = 100
    max_grad_norm: float = 10.0


def learned_leg(theta_a: Params, theta_b: Params, spec: Spec, group: str, nu: Bijection, name: str) -> Leg:
    """Eq. (7) on the group's butterflies: ν once on each endpoint, ν⁻¹ at every point asked for.

    Differentiable in ν's weights (Bijection training uses this very leg); endpoints are exact
    through `Leg.at` although ν⁻¹(ν(X)) only approximates X.
    """
    zx = nu(butterflies(theta_a, spec, group))
    zy = nu(butterflies(theta_b, spec, group))
    return butterfly_leg(theta_a, theta_b, spec, group, lambda t: generalised_arc(zx, zy, t, inverse=nu.inverse),
                         name)


Objective = Callable[[torch.Generator], tuple[torch.Tensor, dict]]
"""generator -> (loss of one step, what to record with it); all randomness comes from the generator."""


def likelihood_objective(nu: Bijection, neurons: torch.Tensor, batch_size: int) -> Objective:
    """Flow: negative log-likelihood per coordinate of a random minibatch of V's neurons."""
    def objective(generator: torch.Generator) -> tuple[torch.Tensor, dict]:
        index = torch.randint(len(neurons), (batch_size,), generator=generator).to(neurons.device)
        return -nu.log_prob(neurons[index]).mean() / nu.shape.features, {}

    return objective


def bijection_objective(nu: Bijection, thetas: Sequence[Params], spec: Spec, group: str, model: nn.Module,
                        data: Dataset, batch_size: int, t_uniform: bool) -> Objective:
    """Bijection, eq. (8): cross-entropy at ψ_W(t, Θ^A, Θ^B) for a random pair A ≠ B of V.

    t = 0.5 (the paper's choice: the midpoint is where the loss peaks) or t ~ U(0, 1); gradients
    flow through ν (on both endpoints) and ν⁻¹ (at the point).
    """
    def objective(generator: torch.Generator) -> tuple[torch.Tensor, dict]:
        a, b = torch.randperm(len(thetas), generator=generator)[:2].tolist()
        t = torch.rand((), generator=generator).item() if t_uniform else 0.5
        index = torch.randint(len(data.x_train), (batch_size,), generator=generator).to(data.x_train.device)
        x, y = data.x_train[index], data.y_train[index]
        if data.augment:
            x = augment_batch(x, generator)
        theta_t = unstack_params(learned_leg(thetas[a], thetas[b], spec, group, nu, "bijection").at([t]), 0)
        return F.cross_entropy(functional_call(model, theta_t, (x,)), y), {"t": t, "pair": [a, b]}

    return objective


def optimise(nu: Bijection, objective: Objective, config: FitConfig, checkpoint: FilePath | None = None,
             identity: str = "", progress: bool = True, desc: str = "fitting ν") -> list[dict]:
    """Adam on ν's weights for `config.steps` steps; returns the training curve, one row per step.

    Step s draws everything from `epoch_generator(seed, s)`, and the checkpoint (every
    `checkpoint_every` steps) holds ν, Adam's state and the curve, so an interrupted fit resumed from
    it ends bit-identical to an uninterrupted one.
    """
    optimizer = torch.optim.Adam(nu.parameters(), lr=config.lr)
    start, curve = 0, []
    resumed = resumable_checkpoint(checkpoint, identity) if checkpoint is not None else None
    if resumed is not None:
        start, curve = _resume(resumed, nu, optimizer)
    bar = tqdm(range(start, config.steps), desc=desc, unit="step", initial=start, total=config.steps,
               disable=not progress)
    for step in bar:
        loss, record = objective(epoch_generator(config.seed, step))
        if not torch.isfinite(loss):
            raise LowlossError(f"fitting ν diverged at step {step + 1} (loss {loss.item()}); lower --lr")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = nn.utils.clip_grad_norm_(nu.parameters(), config.max_grad_norm)
        if torch.isfinite(grad_norm):  # ν⁻¹ can overflow on a rare pair: skip that step, keep Adam's moments finite
            optimizer.step()
        else:
            logger.warning("step %d: non-finite gradient, step skipped", step + 1)
        curve.append({"step": step + 1, "loss": loss.item(), "grad_norm": grad_norm.item(), **record})
        bar.set_postfix(loss=f"{loss.item():.4f}")
        logger.debug("step %d loss %.6f %s", step + 1, loss.item(), record)
        if checkpoint is not None and ((step + 1) % config.checkpoint_every == 0 or step + 1 == config.steps):
            _save_checkpoint(checkpoint, identity, step + 1, nu, optimizer, curve)
    return curve


def _save_checkpoint(path: FilePath, identity: str, step: int, nu: Bijection, optimizer: torch.optim.Optimizer,
                     curve: list[dict]) -> None:
    """Like `lowloss.train`'s checkpoint, but with every tensor of the optimizer state (Adam's moments)."""
    tensors = dict(nu.state_dict())
    for index, state in optimizer.state_dict()["state"].items():
        tensors.update({f"{OPTIMIZER_PREFIX}{index}::{key}": value for key, value in state.items()})
    save_weights(path, tensors, {"kind": "checkpoint", "identity": identity, "step": step, "curve": curve})


def _resume(artifact: Artifact, nu: Bijection, optimizer: torch.optim.Optimizer) -> tuple[int, list[dict]]:
    nu.load_state_dict({k: v for k, v in artifact.tensors.items() if not k.startswith(OPTIMIZER_PREFIX)})
    state: dict[int, dict] = {}
    for name, value in artifact.tensors.items():
        if name.startswith(OPTIMIZER_PREFIX):
            index, key = name.removeprefix(OPTIMIZER_PREFIX).split("::")
            state.setdefault(int(index), {})[key] = value
    optimizer.load_state_dict({"state": state, "param_groups": optimizer.state_dict()["param_groups"]})
    return artifact.meta["step"], list(artifact.meta["curve"])


# --- fitting a connector on a model set, saving and loading it ------------------------------------

def fit_connector(method: str, model_set: ModelSet, out: FilePath, layers: int = LAYERS, hidden: int = HIDDEN,
                  config: FitConfig = FitConfig(), data: Dataset | None = None,
                  device: torch.device | str = "cpu", progress: bool = True) -> dict:
    """Fit ν for `method` on V and save it as a connector (safetensors + sidecar); return the sidecar.

    Flow maximises the likelihood of V's neurons; Bijection minimises eq. (8) on `data`'s training
    split. The sidecar records ν's shape, the architecture and dataset of V, V's hashes (so `connect`
    can refuse seen endpoints), the per-step curve and the score before and after fitting.
    Resumable from `out`'s checkpoint; the same seed gives the same connector.
    """
    if method not in METHODS:
        raise LowlossError(f"unknown connector kind {method!r} (known: {', '.join(METHODS)})")
    flow_type, procedure = METHODS[method]
    if procedure == "bijection" and data is None:
        raise LowlossError(f"{method} is fitted on training data: pass --dataset")
    if data is not None and data.name != model_set.meta["dataset"]:
        raise LowlossError(f"{model_set.path}: V was trained on {model_set.meta['dataset']!r}, not {data.name!r}")
    if config.t_uniform and procedure != "bijection":
        raise LowlossError(f"--t-uniform applies to Bijection training, not to {method}")
    meta_v = model_set.meta
    model = build_model(meta_v["arch"], meta_v["input_shape"], meta_v["num_classes"], meta_v["arch_options"])
    spec = model.spec()
    if not one_hidden_layer(spec):
        raise LowlossError(f"{model_set.path}: learned connections apply to {ONE_HIDDEN}, not to {meta_v['arch']!r}")
    group = spec.groups[0]
    thetas = [{key: value.to(device) for key, value in artifact.tensors.items()} for artifact in model_set.load()]
    neurons = torch.cat([butterflies(theta, spec, group) for theta in thetas])
    shape = FlowShape(flow_type, layers, hidden, neurons.shape[1])
    torch.manual_seed(config.seed)
    nu = Bijection(shape, neurons.mean(0), neurons.std(0)).to(device)
    if procedure == "flow":
        objective = likelihood_objective(nu, neurons, config.batch_size)
        score = lambda: _mean_nll(nu, neurons)  # noqa: E731
    else:
        model = model.to(device)
        objective = bijection_objective(nu, thetas, spec, group, model, data, config.batch_size, config.t_uniform)
        score = lambda: _midpoint_loss(nu, thetas, spec, group, model, data)  # noqa: E731
    score_start = score()
    produced_by = {"method": method, "flow": asdict(shape), "fit": asdict(config), "model_set": list(model_set.hashes)}
    identity = config_hash(produced_by)
    curve = optimise(nu, objective, config, checkpoint_path(out), identity, progress, desc=f"fitting {method}")
    meta = {"kind": "connector", "method": method, "flow": asdict(shape), "group": group, **meta_v,
            "model_set": {"path": str(model_set.path), "hashes": list(model_set.hashes)},
            "fit": asdict(config), "config_hash": identity, "score": SCORES[procedure],
            "score_start": score_start, "score_end": score(), "curve": curve}
    save_weights(out, nu.state_dict(), meta)
    discard_checkpoint(out)
    return meta


SCORES = {"flow": "negative log-likelihood per coordinate of V's neurons",
          "bijection": "train cross-entropy at t = 0.5 between consecutive members of V"}


@torch.no_grad()
def _mean_nll(nu: Bijection, neurons: torch.Tensor, chunk: int = 4096) -> float:
    total = sum(-nu.log_prob(part).sum().item() for part in neurons.split(chunk))
    return total / neurons.numel()


@torch.no_grad()
def _midpoint_loss(nu: Bijection, thetas: Sequence[Params], spec: Spec, group: str, model: nn.Module,
                   data: Dataset, pairs: int = 4) -> float:
    """Mean train loss at ψ_W(0.5) over the pairs (i, i + 1) of V: a fixed, cheap view of eq. (8)."""
    losses = []
    for i in range(min(pairs, len(thetas))):
        leg = learned_leg(thetas[i], thetas[(i + 1) % len(thetas)], spec, group, nu, "midpoint")
        loss, _ = evaluate_stacked(model, leg.at([0.5]), data.x_train, data.y_train, batch=1024)
        losses.append(loss.item())
    return sum(losses) / len(losses)


def load_connector(connector: Artifact, method: str) -> Bijection:
    """Rebuild the fitted ν of a connector file (frozen, eval mode), checking it was fitted for `method`."""
    meta = connector.meta
    if meta.get("kind") != "connector":
        raise LowlossError(f"{connector.path}: not a connector (kind {meta.get('kind')!r}); "
                           f"fit one with `lowloss fit-connector`")
    if meta.get("method") != method:
        raise LowlossError(f"{connector.path}: connector was fitted for {meta.get('method')!r}, not {method!r}")
    try:
        shape = FlowShape(**meta["flow"])
    except (KeyError, TypeError):
        raise ArtifactError(f"{connector.path}: sidecar lacks a valid 'flow' entry") from None
    with torch.random.fork_rng(devices=[]):  # building draws permutations that the file then overwrites
        nu = Bijection(shape)
    try:
        nu.load_state_dict(connector.tensors)
    except RuntimeError:
        raise ArtifactError(f"{connector.path}: tensors do not fit a {shape.type} flow {asdict(shape)}") from None
    return nu.requires_grad_(False).eval()


def check_endpoints(connector: Artifact, ctx: Context) -> None:
    """The endpoints must share V's architecture, width and dataset, and be unseen unless allow_seen."""
    meta = connector.meta
    fitted = {key: meta.get(key) for key in ("arch", "arch_options", "dataset")}
    if ctx.data is not None and ctx.data.name != fitted["dataset"]:
        raise LowlossError(f"{connector.path}: fitted on {fitted['dataset']!r}, not on {ctx.data.name!r}")
    for endpoint in ctx.endpoints or ():
        own = {key: endpoint.meta.get(key) for key in fitted}
        if own != fitted:
            raise LowlossError(f"{connector.path}: fitted for {_describe(fitted)}, but {endpoint.path} is "
                               f"{_describe(own)}")
        if endpoint.meta.get("sha256") in meta["model_set"]["hashes"] and not ctx.options.get("allow_seen"):
            raise LowlossError(f"{endpoint.path}: endpoint is in the model set {connector.path} was fitted on; "
                               f"connect unseen endpoints or pass --allow-seen")


def _describe(meta: dict) -> str:
    return f"{meta['arch']} {meta['arch_options']} on {meta['dataset']!r}"


def learned_path(method: str) -> Build:
    """The registered builder of `method`: eq. (7) through the connector's ν."""
    def build(theta_a: Params, theta_b: Params, ctx: Context) -> Path:
        nu = load_connector(ctx.connector, method)
        check_endpoints(ctx.connector, ctx)
        group = ctx.connector.meta["group"]
        if ctx.spec.groups != [group]:
            raise LowlossError(f"{ctx.connector.path}: fitted on hidden group {group!r}, the endpoints have "
                               f"{ctx.spec.groups}")
        device = next(iter(theta_a.values())).device
        with torch.no_grad():
            leg = learned_leg(theta_a, theta_b, ctx.spec, group, nu.to(device), method)
        return Path([leg], method)

    return build


for _name in METHODS:
    register(_name, DESCRIPTIONS[_name], needs=("connector",), applies=one_hidden_layer,
             applies_to=ONE_HIDDEN)(learned_path(_name))
