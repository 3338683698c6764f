"""The model set V of the global connection model (paper §3.3, §5.1): a manifest of trained models.

Learnable methods are fitted on V's neurons (Flow) or on paths between V's members (Bijection) and
are then applied to endpoints *outside* V. The manifest pins every member by the SHA-256 of its
tensor file, so a connector can later tell whether an endpoint was seen while fitting it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from lowloss.artifacts import Artifact, load_weights, read_meta, write_json_atomic
from lowloss.errors import LowlossError
from lowloss.kinds import require_kind
from lowloss.models import model_from_artifact

FORMAT = "lowloss-model-set/1"
SHARED = ("arch", "arch_options", "dataset", "input_shape", "num_classes")
"""Sidecar keys every member of V must agree on."""


@dataclass(frozen=True)
class ModelSet:
    """A validated manifest: shared architecture/dataset metadata and the members' files and hashes."""

    path: Path
    meta: dict
    files: tuple[Path, ...]
    hashes: tuple[str, ...]

    def load(self) -> list[Artifact]:
        """Load every member, checking it still is the file the manifest pinned."""
        artifacts = []
        for file, sha in zip(self.files, self.hashes):
            artifact = load_weights(file)
            if artifact.meta["sha256"] != sha:
                raise LowlossError(f"{file}: changed since {self.path} was written (hash differs); "
                                   f"rebuild the model set")
            artifacts.append(artifact)
        return artifacts


def write_model_set(out: str | os.PathLike, models: list[str | os.PathLike]) -> dict:
    """Validate `models` as one model set and write its manifest to `out`; return the manifest.

    All members must be trained models of the same architecture (and options) on the same dataset,
    and no file may appear twice (Bijection draws pairs Θ^A ≠ Θ^B). Paths are stored relative to
    the manifest's folder, so a results tree can move as a whole.
    """
    out = Path(out)
    if len(models) < 2:
        raise LowlossError(f"{out}: a model set needs at least two models, got {len(models)}")
    shared, members, seen = None, [], {}
    for model in map(Path, models):
        require_kind(model, "model")
        artifact = load_weights(model)
        model_from_artifact(artifact)  # tensors fit the architecture the sidecar names
        own = {key: artifact.meta.get(key) for key in SHARED}
        if shared is None:
            shared = own
        elif own != shared:
            raise LowlossError(f"{model}: {_describe(own)} differs from {models[0]}'s {_describe(shared)}; "
                               f"all models of a set must share architecture and dataset")
        sha = artifact.meta["sha256"]
        if sha in seen:
            raise LowlossError(f"{model}: same weights as {seen[sha]} (a model set needs distinct models)")
        seen[sha] = model
        members.append({"path": os.path.relpath(model.resolve(), out.resolve().parent), "sha256": sha,
                        "seed": artifact.meta.get("seed"), "test_acc": artifact.meta.get("test_acc")})
    manifest = {"format": FORMAT, **shared, "models": members}
    write_json_atomic(out, manifest)
    return manifest


def load_model_set(path: str | os.PathLike) -> ModelSet:
    """Read and check a manifest written by `write_model_set` (members are loaded by `ModelSet.load`)."""
    path = Path(path)
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise LowlossError(f"{path}: model set not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise LowlossError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise LowlossError(f"{path}: not a lowloss model set (expected format {FORMAT!r})")
    files = tuple((path.parent / member["path"]) for member in manifest["models"])
    for file in files:
        read_meta(file)  # exists and has its sidecar: fail before any long computation
    meta = {key: manifest[key] for key in SHARED}
    return ModelSet(path, meta, files, tuple(member["sha256"] for member in manifest["models"]))


def _describe(shared: dict) -> str:
    return f"{shared['arch']} {shared['arch_options']} on {shared['dataset']!r}"
