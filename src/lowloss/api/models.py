"""Endpoints as the methods see them, from whatever the user has: lowloss model files, their own checkpoints
with a model reference, or two nn.Modules of one architecture; and the spec of any model."""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn

from lowloss.errors import LowlossError
from lowloss.nets.external import output_size
from lowloss.nets.inference import model_spec
from lowloss.nets.network import Network
from lowloss.nets.params import Params
from lowloss.nets.references import ModelRef
from lowloss.nets.spec import Spec
from lowloss.storage.model_files import (
    described,
    endpoint_params,
    load_checkpoints,
    load_models,
    network_of,
    reference_meta,
)
from lowloss.storage.state_dicts import fitted_state_dict
from lowloss.storage.weights import Artifact, tensors_sha256
from lowloss.training.data import Dataset, check_dataset

ModelInput = nn.Module | str | os.PathLike
"""A network given to the API: an nn.Module, or the path of a lowloss model file."""


@dataclass(frozen=True)
class Endpoints:
    """Networks of one architecture (two endpoints, or an ensemble's members): the module that computes them
    (the first one's, on CPU until used) and each one's tensors and metadata (the hash that fitted files are
    checked against, the model's reference)."""

    model: nn.Module
    artifacts: tuple[Artifact, ...]

    @property
    def meta(self) -> dict:
        return self.artifacts[0].meta

    @property
    def arch(self) -> str:
        """The architecture or model reference, as the path table records it."""
        return self.meta["arch"]

    def network(self, device: torch.device) -> Network:
        """The network on `device`, with its spec (the architecture's own or inferred for the endpoints' inputs)."""
        return network_of(self.model.to(device), self.meta)

    def params(self, device: torch.device) -> tuple[Params, Params]:
        """The first two networks' tensors (Θ^A, Θ^B) on `device`."""
        return endpoint_params(*self.artifacts[:2], device)


def model_files(paths: Sequence[str | os.PathLike], what: str = "endpoints") -> Endpoints:
    """lowloss model files, validated and of one architecture and dataset (`what` they are, for messages)."""
    model, artifacts = load_models([Path(path) for path in paths], what)
    return Endpoints(model, tuple(artifacts))


def checkpoints(paths: Sequence[str | os.PathLike], reference: ModelRef) -> Endpoints:
    """The user's checkpoints of the network `reference` names (what depends on the data is added by
    `for_data`)."""
    model, artifacts = load_checkpoints([Path(path) for path in paths], reference)
    return Endpoints(model, tuple(artifacts))


def modules(model_a: nn.Module, model_b: nn.Module, freeze: Sequence[str] = ()) -> Endpoints:
    """Two nn.Modules of one architecture; A's copy computes both (the user's modules are left as they are)."""
    model = copy.deepcopy(model_a).cpu().eval()
    reference = ModelRef(f"{type(model_a).__module__}:{type(model_a).__qualname__}", {}, tuple(freeze))
    artifacts = []
    for label, module in (("model_a", model_a), ("model_b", model_b)):
        state = {key: value.detach().cpu() for key, value in module.state_dict().items()}
        tensors = fitted_state_dict(label, state, model, f"model_a ({reference.text})")
        meta = {**reference_meta(reference), "sha256": tensors_sha256(tensors)}
        artifacts.append(Artifact(Path(label), tensors, meta))
    return Endpoints(model, tuple(artifacts))


def endpoints_of(model_a: ModelInput, model_b: ModelInput, freeze: Sequence[str] = ()) -> Endpoints:
    """Two nn.Modules, or two lowloss model files."""
    if isinstance(model_a, nn.Module) and isinstance(model_b, nn.Module):
        return modules(model_a, model_b, freeze)
    if isinstance(model_a, (str, os.PathLike)) and isinstance(model_b, (str, os.PathLike)):
        if freeze:
            raise LowlossError("freeze applies to nn.Modules (a model file records its own)")
        return model_files([model_a, model_b])
    raise LowlossError(
        f"model_a and model_b must both be nn.Modules or both model files, got {type(model_a).__name__} "
        f"and {type(model_b).__name__}"
    )


def with_inputs(endpoints: Endpoints, input_shape: Sequence[int], dataset: str | None) -> Endpoints:
    """Endpoints that do not record their data (the user's checkpoints and modules) described by the inputs they
    take (refused in one line when the model does not take them), the classes they give, and the dataset."""
    classes = output_size(endpoints.model, input_shape, endpoints.arch)
    artifacts = tuple(described(artifact, input_shape, classes, dataset) for artifact in endpoints.artifacts)
    return replace(endpoints, artifacts=artifacts)


def for_data(endpoints: Endpoints, data: Dataset, labels_only: bool = False) -> tuple[Endpoints, Dataset]:
    """The endpoints checked against the data they are evaluated on. Endpoints that do not record their data
    take its input shape and name (`with_inputs`). `labels_only`: the data's classes are only known from its
    labels (the user's tensors or loaders), so it has as many as the models give, where its labels fit."""
    if "input_shape" not in endpoints.meta:
        endpoints = with_inputs(endpoints, data.input_shape, data.name)
    if labels_only:
        data = replace(data, num_classes=max(data.num_classes, endpoints.meta["num_classes"]))
    check_dataset(data, endpoints.artifacts[0])
    return endpoints, data


def infer_spec(model: nn.Module, example: torch.Tensor | Sequence[int], freeze: Sequence[str] = ()) -> Spec:
    """The spec of `model`: which units of which tensors permute together.

    `example` is a batch of inputs (N, C, H, W) or the shape of one input (C, H, W); `freeze` names modules
    whose units stay in place. A built-in architecture gives its own spec; another model's is inferred from its
    torch.fx graph and checked by permuting every group at random (one line names what breaks the symmetry).
    """
    shape = tuple(example.shape[1:]) if isinstance(example, torch.Tensor) else tuple(example)
    return model_spec(model, shape, tuple(freeze))
