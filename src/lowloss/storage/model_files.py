"""Trained model files as networks: a weight file rebuilt as its nn.Module, and pairs of endpoints that
must share architecture and dataset.

The network a header describes is first built on torch's `meta` device, which allocates nothing, and
compared with the tensors the header lists: a header that names a network other than its tensors (a width
of 10^7 beside a small file, say) is refused before any memory is spent on it."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from lowloss.errors import LowlossError
from lowloss.nets.models import build_model
from lowloss.nets.params import Params
from lowloss.storage.atomic import ArtifactError
from lowloss.storage.file_kinds import MODEL, require_kind
from lowloss.storage.header import MODEL_KEYS
from lowloss.storage.weights import Artifact, load_weights

__all__ = ["MODEL_KEYS", "check_fits_architecture", "load_endpoints", "load_model", "model_from_artifact"]
# MODEL_KEYS (from the header's schema): the metadata models must share to be connected, ensembled or put in
# one model set.


def check_fits_architecture(path: Path, meta: dict) -> None:
    """Stop with one line unless the network `meta` describes has exactly the tensors `meta["tensors"]` lists:
    names, shapes, and dtypes of their kind (float32 or float64 for floating ones, int64 for counters).
    Built on the meta device: nothing is allocated, however large the network the header claims."""
    try:
        with torch.device("meta"):
            model = build_model(meta["arch"], meta["input_shape"], meta["num_classes"], meta.get("arch_options"))
    except KeyError as exc:
        raise ArtifactError(f"{path}: metadata lacks {exc.args[0]!r}; is this a trained model?") from None
    except (LowlossError, TypeError, ValueError, RuntimeError) as exc:
        raise ArtifactError(f"{path}: metadata describes no network ({' '.join(str(exc).split())})") from None
    expected = {key: (list(t.shape), t.is_floating_point()) for key, t in model.state_dict().items()}
    found = {key: (entry["shape"], entry.get("dtype", "float32") != "int64") for key, entry in meta["tensors"].items()}
    if expected != found:
        differ = sorted(key for key in expected.keys() | found.keys() if expected.get(key) != found.get(key))
        raise ArtifactError(
            f"{path}: tensors do not fit architecture {meta['arch']!r} with options {meta.get('arch_options')} "
            f"(first difference: {differ[0]!r})"
        )


def model_from_artifact(artifact: Artifact) -> nn.Module:
    """Rebuild the network a weight file describes and load its tensors (strictly)."""
    meta = artifact.meta
    check_fits_architecture(artifact.path, meta)
    model = build_model(meta["arch"], meta["input_shape"], meta["num_classes"], meta.get("arch_options"))
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
