"""WA-ensembles (§6, Fig. 6–7): independently trained networks that share the first one's backbone.

WA(n) re-fits member k's n-th layer from the last, ℓ, to read model 1's features instead of its own:
W_k^1 = W_k F_k F_1^+ (eq. 10 on the training split), so every member runs on model 1's layers before
ℓ and only its adjusted layer and the layers after it (its head) are computed per member. Model 1
keeps its own layer ℓ (its features are the basis). Ind, the usual ensemble, shares nothing.

The members' predictions are averaged as probabilities: the ensemble is then a mixture of the
members' predictive distributions, the usual ensemble, and no member's logit scale dominates it.
WA(1) is the exception the paper points out: its members differ only in the last layer, which is
linear, so the ensemble is one network whose last layer is the average of the adjusted ones — the
average of the members' logits, at one model's cost.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from lowloss.errors import LowlossError
from lowloss.evaluate.scores import chunk_sizes, layer_flops, mean_scores
from lowloss.methods.adjust import fit_layer_targets
from lowloss.nets.models import build_model
from lowloss.nets.network import INPUT, OUTPUT, Layer, Network, after, before
from lowloss.nets.params import Params
from lowloss.storage.atomic import ArtifactError
from lowloss.storage.file_kinds import ENSEMBLE, require_meta_kind
from lowloss.storage.model_files import network_of
from lowloss.storage.weights import Artifact, load_weights, save_weights
from lowloss.training.data import Dataset

IND = "ind"
SHARED, MEMBER = "shared.", "member{}."
"""Key prefixes in an ensemble file: model 1's backbone, and member k's head."""


def method_name(wa_layer: int | None) -> str:
    """`ind` for Ind, `wa2` for WA(2): the name in summaries, sidecars and workflow paths."""
    return IND if wa_layer is None else f"wa{wa_layer}"


@dataclass(frozen=True)
class Ensemble:
    """Members that share `shared` (model 1's layers before the split) and each run their own head after it.

    `heads[k]` holds member k's tensors from the split on: its (adjusted) layer ℓ and every later one;
    with `wa_layer` None (Ind) nothing is shared and the heads are the whole members.
    """

    network: Network
    shared: Params
    heads: list[Params]
    wa_layer: int | None = None

    @property
    def method(self) -> str:
        return method_name(self.wa_layer)

    @property
    def split(self) -> int:
        """Index of the first layer each member computes for itself (ℓ; 0 for Ind)."""
        return 0 if self.wa_layer is None else len(self.network.layers) - self.wa_layer

    @property
    def cut(self) -> str:
        return INPUT if self.split == 0 else before(self.network.layers[self.split])

    @property
    def averages_logits(self) -> bool:
        """WA(1): the members' last layers are averaged into one network (see the module docstring)."""
        return self.wa_layer == 1

    def member_logits(self, x: Tensor) -> list[Tensor]:
        """Each member's logits: the shared backbone once, then every head."""
        features = x if self.cut == INPUT else self.network.run(self.shared, x, INPUT, self.cut)
        return [self.network.run(head, features, self.cut, OUTPUT) for head in self.heads]

    def combine(self, logits: Sequence[Tensor]) -> Tensor:
        """The ensemble's log-probabilities from its members' logits."""
        stacked = torch.stack(list(logits))
        if self.averages_logits:
            return F.log_softmax(stacked.mean(0), -1)
        return torch.logsumexp(F.log_softmax(stacked, -1), 0) - math.log(len(stacked))

    @torch.no_grad()
    def log_probs(self, x: Tensor) -> Tensor:
        return self.combine(self.member_logits(x))

    def averaged(self) -> Params:
        """WA(1) as one network: model 1's backbone and the mean of the members' adjusted last layers."""
        if not self.averages_logits:
            raise LowlossError(f"only WA(1) is one network; {self.method} keeps a head per member")
        return {
            **self.shared,
            **{key: torch.stack([head[key] for head in self.heads]).mean(0) for key in self.heads[0]},
        }

    def costs(self, input_shape: Sequence[int]) -> dict[str, float]:
        """Inference FLOPs per sample (linear and conv layers) and stored parameters."""
        flops = layer_flops(self.network.model, input_shape)
        shared, head = self.network.layers[: self.split], self.network.layers[self.split :]
        copies = 1 if self.averages_logits else len(self.heads)
        return {
            "flops": sum(flops[layer.name] for layer in shared) + copies * sum(flops[layer.name] for layer in head),
            "params": _numel(self.shared) + copies * _numel(self.heads[0]),
        }


def _numel(params: Params) -> int:
    return sum(tensor.numel() for tensor in params.values())


def _keys(layers: Sequence[Layer]) -> list[str]:
    return [key for layer in layers for key in layer.keys]


def check_members(network: Network, members: Sequence[Params]) -> None:
    if len(members) < 2:
        raise LowlossError(f"an ensemble needs at least two models, got {len(members)}")
    if not network.is_chain:
        raise LowlossError(
            f"{type(network.model).__name__} is not a chain of dense and conv layers; its layers cannot be shared"
        )


def split_layer(network: Network, wa_layer: int) -> int:
    """Index of the layer WA(n) adjusts, n counted from the last layer (n = 1: the last layer)."""
    count = len(network.layers)
    if not 1 <= wa_layer < count:
        raise LowlossError(
            f"--wa-layer {wa_layer} is out of range for {type(network.model).__name__}: its "
            f"{count} weight layers allow 1 (the last layer) to {count - 1} (n = {count} would "
            f"share no layer: that is --independent)"
        )
    return count - wa_layer


def independent(network: Network, members: Sequence[Params]) -> Ensemble:
    """Ind: the unchanged members, nothing shared."""
    check_members(network, members)
    return Ensemble(network, {}, [dict(member) for member in members])


def weight_adjusted(network: Network, members: Sequence[Params], wa_layer: int, x: Tensor) -> Ensemble:
    """WA(n): members 2… re-fitted at layer ℓ (the n-th from the last) to read model 1's features on x.

    One pass over x fits every member (they share model 1's Gram matrix, `fit_layer_targets`).
    """
    check_members(network, members)
    index = split_layer(network, wa_layer)
    layer, first = network.layers[index], members[0]
    shared_keys, head_keys = _keys(network.layers[:index]), _keys(network.layers[index:])
    features = network.segment(INPUT, before(layer))
    outputs = network.segment(INPUT, after(layer))
    with torch.no_grad():
        adjusted = fit_layer_targets(
            layer, x, lambda xb: features(first, xb), lambda xb: [outputs(member, xb) for member in members[1:]]
        )
    heads = [{key: member[key] for key in head_keys} for member in members]
    heads[1:] = [{**head, **fitted} for head, fitted in zip(heads[1:], adjusted)]
    return Ensemble(network, {key: first[key] for key in shared_keys}, heads, wa_layer)


Scores = dict[str, dict[str, float]]
"""Per split ('train', 'test'): {'loss': …, 'acc': …}."""


@torch.no_grad()
def score_rows(predict: Callable[[Tensor], list[Tensor]], data: Dataset, batch: int) -> list[Scores]:
    """Mean cross-entropy and accuracy on both splits of every row `predict(xb)` returns (logits or
    log-probabilities: cross-entropy normalises either)."""
    per_split = {}
    for split in ("train", "test"):
        x, y = data.split(split)
        batches = (torch.stack(predict(x[start : start + batch])) for start in range(0, len(x), batch))
        per_split[split] = mean_scores(batches, y)
    count = len(per_split["test"][0])
    return [
        {split: {"loss": float(loss[i]), "acc": float(acc[i])} for split, (loss, acc) in per_split.items()}
        for i in range(count)
    ]


def evaluate(ind: Ensemble, wa: Ensemble | None, data: Dataset) -> dict:
    """Scores of every member, of Ind and of the WA-ensemble, with WA's adjusted members 2…, in one pass."""
    _, batch = chunk_sizes(ind.network.model, data.input_shape, 1)

    def predict(xb: Tensor) -> list[Tensor]:
        logits = ind.member_logits(xb)
        rows = [*logits, ind.combine(logits)]
        if wa is not None:
            adjusted = wa.member_logits(xb)
            rows += [wa.combine(adjusted), *adjusted[1:]]
        return rows

    rows = score_rows(predict, data, batch)
    size = len(ind.heads)
    out = {"members": rows[:size], IND: rows[size]}
    if wa is not None:
        out["wa"], out["adjusted"] = rows[size + 1], rows[size + 2 :]
    return out


def flat_scores(scores: Scores, prefix: str = "") -> dict[str, float]:
    """{'train': {'acc': a}} -> {'<prefix>_train_acc': a} (or 'train_acc'): summary and MLflow metric names."""
    return {
        "_".join(filter(None, (prefix, split, name))): value
        for split, values in scores.items()
        for name, value in values.items()
    }


def save_ensemble(path: str | Path, ensemble: Ensemble, meta: dict) -> None:
    """The backbone as `shared.<key>`, member k's head as `member<k>.<key>`; `meta` describes the ensemble."""
    tensors = {SHARED + key: value for key, value in ensemble.shared.items()}
    for k, head in enumerate(ensemble.heads):
        tensors.update({MEMBER.format(k) + key: value for key, value in head.items()})
    save_weights(
        path,
        tensors,
        {
            **meta,
            "kind": ENSEMBLE,
            "method": ensemble.method,
            "wa_layer": ensemble.wa_layer,
            "size": len(ensemble.heads),
        },
    )


def load_ensemble(path: str | Path) -> tuple[Ensemble, Artifact]:
    """An ensemble file (validated) on CPU, with its artifact."""
    artifact = load_weights(path)
    meta = artifact.meta
    require_meta_kind(path, meta, ENSEMBLE)
    try:
        model = build_model(meta["arch"], meta["input_shape"], meta["num_classes"], meta.get("arch_options"))
        wa_layer, size = meta["wa_layer"], int(meta["size"])
    except KeyError as exc:
        raise ArtifactError(f"{path}: sidecar lacks {exc.args[0]!r}") from None
    network = network_of(model.eval(), meta)
    template = Ensemble(network, {}, [], wa_layer)
    shapes = {key: tuple(value.shape) for key, value in model.state_dict().items()}
    shared_keys, head_keys = _keys(network.layers[: template.split]), _keys(network.layers[template.split :])
    expected = {SHARED + key: shapes[key] for key in shared_keys}
    for k in range(size):
        expected.update({MEMBER.format(k) + key: shapes[key] for key in head_keys})
    if expected != {key: tuple(value.shape) for key, value in artifact.tensors.items()}:
        raise ArtifactError(
            f"{path}: tensors do not fit a {method_name(wa_layer)} ensemble of {size} "
            f"{meta['arch']} models with options {meta.get('arch_options')}"
        )
    tensors = artifact.tensors
    heads = [{key: tensors[MEMBER.format(k) + key] for key in head_keys} for k in range(size)]
    return replace(template, shared={key: tensors[SHARED + key] for key in shared_keys}, heads=heads), artifact
