"""Trained model files as networks: a weight file rebuilt as its nn.Module, and pairs of endpoints that
must share architecture and dataset."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from lowloss.errors import LowlossError
from lowloss.nets.models import build_model
from lowloss.nets.params import Params
from lowloss.storage.atomic import ArtifactError
from lowloss.storage.file_kinds import MODEL, require_kind
from lowloss.storage.weights import Artifact, load_weights

MODEL_KEYS = ("arch", "arch_options", "input_shape", "num_classes", "dataset")
"""Metadata that models must share to be connected, ensembled or put in one model set."""


def model_from_artifact(artifact: Artifact) -> nn.Module:
    """Rebuild the network a weight file describes and load its tensors (strictly)."""
    meta = artifact.meta
    try:
        model = build_model(meta["arch"], meta["input_shape"], meta["num_classes"], meta.get("arch_options"))
    except KeyError as exc:
        raise ArtifactError(f"{artifact.path}: sidecar lacks {exc.args[0]!r}; is this a trained model?") from None
    expected = {key: tuple(t.shape) for key, t in model.state_dict().items()}
    found = {key: tuple(t.shape) for key, t in artifact.tensors.items()}
    if expected != found:
        raise ArtifactError(
            f"{artifact.path}: tensors do not fit architecture {meta['arch']!r} with options {meta.get('arch_options')}"
        )
    model.load_state_dict(artifact.tensors)
    return model


def load_model(path: str | Path) -> tuple[nn.Module, Artifact]:
    """Load a trained model file (validated) as an nn.Module on CPU in eval mode, with its artifact."""
    require_kind(path, MODEL)
    artifact = load_weights(path)
    return model_from_artifact(artifact).eval(), artifact


def load_endpoints(path_a: Path, path_b: Path) -> tuple[nn.Module, Artifact, Artifact]:
    """Both endpoints, validated, of one architecture, width and dataset; the model is A's."""
    model, artifact_a = load_model(path_a)
    _, artifact_b = load_model(path_b)
    for key in MODEL_KEYS:
        if artifact_a.meta.get(key) != artifact_b.meta.get(key):
            raise LowlossError(
                f"{path_b}: {key} {artifact_b.meta.get(key)!r} differs from {path_a}'s "
                f"{artifact_a.meta.get(key)!r}; endpoints must share architecture and dataset"
            )
    return model, artifact_a, artifact_b


def endpoint_params(artifact_a: Artifact, artifact_b: Artifact, device: torch.device) -> tuple[Params, Params]:
    """Both endpoints' tensors on `device`."""
    return tuple({key: value.to(device) for key, value in a.tensors.items()} for a in (artifact_a, artifact_b))
