"""Connectors: ν fitted on a model set V (`fit_connector`), saved, loaded and applied by eq. (7)."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path as FilePath

import torch

from lowloss.errors import LowlossError
from lowloss.methods.context import Context
from lowloss.methods.flows.config import HIDDEN, LAYERS, FitConfig
from lowloss.methods.flows.nu import Bijection, FlowShape
from lowloss.methods.flows.objectives import (
    SCORES,
    bijection_objective,
    learned_leg,
    likelihood_objective,
    mean_nll,
    midpoint_loss,
)
from lowloss.methods.flows.optimise import optimise
from lowloss.methods.neurons import butterflies
from lowloss.methods.registry import FLOWS
from lowloss.nets.models import build_model
from lowloss.nets.network import Network
from lowloss.nets.params import Params
from lowloss.nets.topology import ONE_HIDDEN
from lowloss.paths.legs import Path
from lowloss.storage.atomic import ArtifactError
from lowloss.storage.checkpoints import checkpoint_path, config_hash, discard_checkpoint
from lowloss.storage.file_kinds import CONNECTOR, require_meta_kind
from lowloss.storage.model_set import ModelSet
from lowloss.storage.weights import Artifact, save_weights
from lowloss.training.data import Dataset


def fit_connector(
    method: str,
    model_set: ModelSet,
    out: FilePath,
    layers: int = LAYERS,
    hidden: int = HIDDEN,
    config: FitConfig = FitConfig(),
    data: Dataset | None = None,
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> dict:
    """Fit ν for `method` on V and save it as a connector (safetensors + sidecar); return the sidecar.

    Flow maximises the likelihood of V's neurons; Bijection minimises eq. (8) on `data`'s training
    split. The sidecar records ν's shape, the architecture and dataset of V, V's hashes (so `connect`
    can refuse seen endpoints), the per-step curve and the score before and after fitting.
    Resumable from `out`'s checkpoint; the same seed gives the same connector.
    """
    if method not in FLOWS:
        raise LowlossError(f"unknown learned method {method!r} (known: {', '.join(FLOWS)})")
    flow_type, procedure = FLOWS[method]
    if procedure == "bijection" and data is None:
        raise LowlossError(f"{method} is fitted on training data: pass --dataset")
    if data is not None and data.name != model_set.meta["dataset"]:
        raise LowlossError(f"{model_set.path}: V was trained on {model_set.meta['dataset']!r}, not {data.name!r}")
    if config.t_uniform and procedure != "bijection":
        raise LowlossError(f"--t-uniform applies to Bijection training, not to {method}")
    meta_v = model_set.meta
    model = build_model(meta_v["arch"], meta_v["input_shape"], meta_v["num_classes"], meta_v["arch_options"]).eval()
    network = Network(model)  # eval mode: ν is fitted through the networks as fixed functions
    spec = network.spec
    if network.topology != ONE_HIDDEN:
        raise LowlossError(f"{model_set.path}: learned connections apply to {ONE_HIDDEN}, not to {meta_v['arch']!r}")
    group = spec.groups[0]
    thetas = [{key: value.to(device) for key, value in artifact.tensors.items()} for artifact in model_set.load()]
    neurons = torch.cat([butterflies(theta, spec, group) for theta in thetas])
    shape = FlowShape(flow_type, layers, hidden, neurons.shape[1])
    torch.manual_seed(config.seed)
    nu = Bijection(shape, neurons.mean(0), neurons.std(0)).to(device)
    if procedure == "flow":
        objective = likelihood_objective(nu, neurons, config.batch_size)
        score = lambda: mean_nll(nu, neurons)  # noqa: E731
    else:
        model = model.to(device)
        objective = bijection_objective(nu, thetas, spec, group, model, data, config.batch_size, config.t_uniform)
        score = lambda: midpoint_loss(nu, thetas, spec, group, model, data)  # noqa: E731
    score_start = score()
    produced_by = {"method": method, "flow": asdict(shape), "fit": asdict(config), "model_set": list(model_set.hashes)}
    identity = config_hash(produced_by)
    curve = optimise(nu, objective, config, checkpoint_path(out), identity, progress, desc=f"fitting {method}")
    meta = {
        "kind": CONNECTOR,
        "method": method,
        "flow": asdict(shape),
        "group": group,
        **meta_v,
        "model_set": {"path": str(model_set.path), "hashes": list(model_set.hashes)},
        "fit": asdict(config),
        "config_hash": identity,
        "score": SCORES[procedure],
        "score_start": score_start,
        "score_end": score(),
        "curve": curve,
    }
    save_weights(out, nu.state_dict(), meta)
    discard_checkpoint(out)
    return meta


def load_connector(connector: Artifact, method: str) -> Bijection:
    """Rebuild the fitted ν of a connector file (frozen, eval mode), checking it was fitted for `method`."""
    meta = connector.meta
    require_meta_kind(connector.path, meta, CONNECTOR)
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
            raise LowlossError(
                f"{connector.path}: fitted for {_describe(fitted)}, but {endpoint.path} is {_describe(own)}"
            )
        if endpoint.meta.get("sha256") in meta["model_set"]["hashes"] and not ctx.options.allow_seen:
            raise LowlossError(
                f"{endpoint.path}: endpoint is in the model set {connector.path} was fitted on; "
                f"connect unseen endpoints or pass --allow-seen"
            )


def _describe(meta: dict) -> str:
    return f"{meta['arch']} {meta['arch_options']} on {meta['dataset']!r}"


def learned_path(method: str, theta_a: Params, theta_b: Params, ctx: Context) -> Path:
    """Eq. (7) through the connector's ν, for endpoints outside the model set it was fitted on."""
    nu = load_connector(ctx.connector, method)
    check_endpoints(ctx.connector, ctx)
    group = ctx.connector.meta["group"]
    if ctx.spec.groups != [group]:
        raise LowlossError(
            f"{ctx.connector.path}: fitted on hidden group {group!r}, the endpoints have {ctx.spec.groups}"
        )
    device = next(iter(theta_a.values())).device
    with torch.no_grad():
        leg = learned_leg(theta_a, theta_b, ctx.spec, group, nu.to(device), method)
    return Path([leg])
