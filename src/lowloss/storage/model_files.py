"""Model files as networks: a weight file rebuilt as its nn.Module, a user's checkpoint read for a model
reference, pairs of endpoints that must share architecture and dataset, and a model's network with its spec.

The network a header describes is first built on torch's `meta` device, which allocates nothing, and
compared with the tensors the header lists: a header that names a network other than its tensors (a width
of 10^7 beside a small file, say) is refused before any memory is spent on it."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from lowloss.errors import LowlossError
from lowloss.nets.external import build_reference
from lowloss.nets.inference import model_spec
from lowloss.nets.models import build_model
from lowloss.nets.network import Network
from lowloss.nets.params import Params
from lowloss.nets.references import ModelRef
from lowloss.storage.atomic import ArtifactError
from lowloss.storage.file_kinds import MODEL, require_kind, require_not_checkpoint
from lowloss.storage.header import MODEL_KEYS
from lowloss.storage.state_dicts import fitted_state_dict, read_state_dict
from lowloss.storage.weights import Artifact, file_sha256, load_weights, tensors_sha256

FREEZE_KEY = "freeze"
"""Metadata of a model whose spec leaves some modules' units in place (recorded only when it does)."""
# MODEL_KEYS (from the header's schema): the metadata models must share to be connected, ensembled or put in
# one model set.


def model_meta(meta: dict) -> dict:
    """What a file made from a model records about it, to rebuild it: `MODEL_KEYS`, and `freeze` when recorded."""
    return {key: meta.get(key) for key in MODEL_KEYS} | ({FREEZE_KEY: meta[FREEZE_KEY]} if FREEZE_KEY in meta else {})


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
    require_not_checkpoint(path)
    require_kind(path, MODEL)
    artifact = load_weights(path)
    return model_from_artifact(artifact).eval(), artifact


def require_same_model(first: Artifact, other: Artifact, what: str) -> None:
    """Stop with one line naming the metadata in which `other` differs from `first` (`what` must share them)."""
    for key in (*MODEL_KEYS, FREEZE_KEY):
        if first.meta.get(key) != other.meta.get(key):
            raise LowlossError(
                f"{other.path}: {key} {other.meta.get(key)!r} differs from {first.path}'s "
                f"{first.meta.get(key)!r}; {what} must share architecture and dataset"
            )


def load_models(paths: Sequence[Path], what: str) -> tuple[nn.Module, list[Artifact]]:
    """Model files, validated, of one architecture, width and dataset (`what` they are, for the message); the
    model is the first one's."""
    model, first = load_model(paths[0])
    artifacts = [first]
    for path in paths[1:]:
        artifacts.append(load_model(path)[1])
        require_same_model(first, artifacts[-1], what)
    return model, artifacts


def load_endpoints(path_a: Path, path_b: Path) -> tuple[nn.Module, Artifact, Artifact]:
    """Both endpoints, validated, of one architecture, width and dataset; the model is A's."""
    model, (artifact_a, artifact_b) = load_models([path_a, path_b], "endpoints")
    return model, artifact_a, artifact_b


def load_checkpoints(paths: Sequence[Path], reference: ModelRef) -> tuple[nn.Module, list[Artifact]]:
    """A user's checkpoints of the network `reference` names: the network (with the first checkpoint's
    weights, eval mode, on CPU) and each file as an artifact whose tensors fit it exactly.

    Their metadata records the reference, its arguments, the tensors' identity hash and the file's own; what
    depends on the data (input shape, classes, dataset) is added by `described`.
    """
    model = build_reference(reference.text, reference.args)
    artifacts = []
    for path in map(Path, paths):
        tensors = fitted_state_dict(path, read_state_dict(path), model, reference.text)
        meta = {**reference_meta(reference), "sha256": tensors_sha256(tensors), "checkpoint_sha256": file_sha256(path)}
        artifacts.append(Artifact(path, tensors, meta))
    model.load_state_dict(artifacts[0].tensors)
    return model, artifacts


def reference_meta(reference: ModelRef) -> dict:
    """The metadata of a model built from `reference`: its kind, the reference, arguments and frozen modules."""
    meta = {"kind": MODEL, "arch": reference.text, "arch_options": reference.args}
    return meta | ({FREEZE_KEY: list(reference.freeze)} if reference.freeze else {})


def described(artifact: Artifact, input_shape: Sequence[int], num_classes: int, dataset: str) -> Artifact:
    """`artifact` with the metadata a model file holds about its data: input shape, classes and dataset."""
    meta = {**artifact.meta, "input_shape": list(input_shape), "num_classes": num_classes, "dataset": dataset}
    return Artifact(artifact.path, artifact.tensors, meta)


def network_of(model: nn.Module, meta: dict) -> Network:
    """The network of `model` with its spec: the architecture's own, or inferred for the model file's inputs."""
    return Network(model, model_spec(model, meta["input_shape"], meta.get(FREEZE_KEY, ())))


def endpoint_params(artifact_a: Artifact, artifact_b: Artifact, device: torch.device) -> tuple[Params, Params]:
    """Both endpoints' tensors on `device`."""
    return tuple({key: value.to(device) for key, value in a.tensors.items()} for a in (artifact_a, artifact_b))
