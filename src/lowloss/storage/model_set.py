"""The model set V of the global connection model (paper §3.3, §5.1): a manifest of trained models.

Learnable methods are fitted on V's neurons (Flow) or on paths between V's members (Bijection) and
are then applied to endpoints *outside* V. The manifest pins every member by the SHA-256 of its
tensors, so a connector can later tell whether an endpoint was seen while fitting it.

A manifest is checked by the same rules when it is written and every time it is read
(`_check_manifest`): at least two distinct members, each a trained model whose architecture, options
and dataset are the manifest's, each still the file the manifest pinned, and each inside the
manifest's folder unless `allow_outside` is given. A hand-edited manifest cannot relabel its members
or point at arbitrary files.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from lowloss.errors import LowlossError
from lowloss.storage.atomic import ArtifactError, require_file, write_json_atomic
from lowloss.storage.file_kinds import KINDS, MODEL, MODEL_SET_FORMAT, describe, require_kind
from lowloss.storage.header import MODEL_KEYS
from lowloss.storage.model_files import check_fits_architecture, model_from_artifact
from lowloss.storage.weights import Artifact, load_weights, read_meta


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
            artifact = _member(self.path, file, load_weights)
            if artifact.meta["sha256"] != sha:
                raise _changed(self.path, file)
            artifacts.append(artifact)
        return artifacts


def write_model_set(out: str | os.PathLike, models: list[str | os.PathLike], allow_outside: bool = False) -> dict:
    """Validate `models` as one model set and write its manifest to `out`; return the manifest.

    All members must be trained models of the same architecture (and options) on the same dataset,
    and no file may appear twice (Bijection draws pairs Θ^A ≠ Θ^B). Paths are stored relative to
    the manifest's folder, so a results tree can move as a whole; members outside that folder need
    `allow_outside`, on writing and on every read.
    """
    out = Path(out)
    _require_two(out, len(models))
    members, shared = [], None
    for model in map(Path, models):
        require_kind(model, MODEL)
        artifact = _member(out, model, load_weights)
        if artifact.meta.get("kind") == MODEL:
            model_from_artifact(artifact)  # tensors fit the architecture the metadata names
        shared = shared or {key: artifact.meta.get(key) for key in MODEL_KEYS}
        members.append(
            {
                "path": os.path.relpath(os.path.abspath(model), os.path.abspath(out.parent)),
                "sha256": artifact.meta["sha256"],
                "seed": artifact.meta.get("seed"),
                "test_acc": artifact.meta.get("test_acc"),
            }
        )
    manifest = {"format": MODEL_SET_FORMAT, **shared, "models": members}
    _check_manifest(out, manifest, allow_outside, shown=list(map(Path, models)))
    write_json_atomic(out, manifest)
    return manifest


def load_model_set(path: str | os.PathLike, allow_outside: bool = False) -> ModelSet:
    """Read a manifest and check it by the rules of `write_model_set` (members are loaded by
    `ModelSet.load`; here only their headers are read, so a bad set fails before any long work)."""
    path = Path(path)
    require_file(path)
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise LowlossError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != MODEL_SET_FORMAT:
        raise LowlossError(f"{path}: not a lowloss model set (expected format {MODEL_SET_FORMAT!r})")
    files = _check_manifest(path, manifest, allow_outside)
    return ModelSet(
        path,
        {key: manifest[key] for key in MODEL_KEYS},
        files,
        tuple(member["sha256"] for member in manifest["models"]),
    )


def _check_manifest(
    path: Path, manifest: dict, allow_outside: bool, shown: list[Path] | None = None
) -> tuple[Path, ...]:
    """The rules of a model set, for writing and reading alike; returns the members' files.

    `shown` names the members in messages as the user gave them (on writing); by default they are
    named by their path in the manifest, resolved against its folder.
    """
    missing = [key for key in MODEL_KEYS if key not in manifest]
    if missing:
        raise LowlossError(f"{path}: lacks {', '.join(map(repr, missing))}; rebuild it with `lowloss model-set`")
    members = manifest.get("models")
    _require_two(path, len(members) if isinstance(members, list) else 0)
    shared = {key: manifest[key] for key in MODEL_KEYS}
    files, seen = [], {}
    for index, member in enumerate(members):
        if not (
            isinstance(member, dict) and isinstance(member.get("path"), str) and isinstance(member.get("sha256"), str)
        ):
            raise LowlossError(f"{path}: member {index + 1} needs a 'path' and a 'sha256' (got {member!r})")
        file = _resolve(path, member["path"], allow_outside)
        name = shown[index] if shown else file
        meta = _member(path, name, read_meta)
        if meta.get("kind") != MODEL:
            raise LowlossError(f"{path}: member {name}: not {KINDS[MODEL]}; it is {describe(meta.get('kind'))}")
        _member(path, name, partial(check_fits_architecture, meta=meta))
        own = {key: meta.get(key) for key in MODEL_KEYS}
        if own != shared:
            raise LowlossError(
                f"{path}: member {name}: {_describe(own)} differs from the set's {_describe(shared)}; "
                f"all models of a set must share architecture and dataset"
            )
        if meta.get("sha256") != member["sha256"]:
            raise _changed(path, name)
        if member["sha256"] in seen:
            raise LowlossError(
                f"{path}: member {name}: same weights as {seen[member['sha256']]} (a model set needs distinct models)"
            )
        seen[member["sha256"]] = name
        files.append(file)
    return tuple(files)


def _resolve(path: Path, member: str, allow_outside: bool) -> Path:
    """A member's file: relative to the manifest's folder, and inside it unless `allow_outside`."""
    inside = not os.path.isabs(member) and Path(os.path.normpath(member)).parts[:1] != (os.pardir,)
    if not (inside or allow_outside):
        raise LowlossError(
            f"{path}: member {member}: lies outside the manifest's folder (pass --allow-outside to use it)"
        )
    return path.parent / member


def _require_two(path: Path, count: int) -> None:
    if count < 2:
        raise LowlossError(f"{path}: a model set needs at least two models, got {count}")


def _member(path: Path, file: Path, read):
    """`read(file)` with a failure named by the manifest and the member."""
    try:
        return read(file)
    except ArtifactError as exc:
        raise LowlossError(f"{path}: member {exc}") from None


def _changed(path: Path, file: Path) -> LowlossError:
    return LowlossError(
        f"{path}: member {file}: changed since the manifest was written (hash differs); rebuild the model set"
    )


def _describe(shared: dict) -> str:
    return f"{shared['arch']} {shared['arch_options']} on {shared['dataset']!r}"
