"""Weights as one unit: a safetensors file whose header holds the metadata, and a JSON copy beside it.

The header's `__metadata__` carries the whole metadata as JSON, including `sha256`, the identity hash
of the tensors: the SHA-256 of the tensors serialised as safetensors without metadata, which is also
the file hash of a weight file written before the header held the metadata. One atomic rename
publishes a new version (`lowloss.storage.atomic`). The sidecar beside it (`x.json`) is a readable copy
of the header for people and for tools that read JSON; every read rewrites it when it is missing or
differs from the header (after a kill between the two renames, say), and nothing trusts it over the
header.

Files of the earlier format (`lowloss-weights/1`: plain safetensors, the metadata and the hash of the
whole file only in the sidecar) are read as before, from their sidecar. Nothing here unpickles.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save

from lowloss import __version__
from lowloss.storage.atomic import (
    ArtifactError,
    json_text,
    require_file,
    write_bytes_atomic,
    write_json_atomic,
    write_text_atomic,
)

FORMAT = "lowloss-weights/2"
LEGACY_FORMAT = "lowloss-weights/1"
HEADER_KEY = "lowloss"
"""The key of `__metadata__` that holds the metadata JSON."""

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Artifact:
    """Tensors (on CPU) and the metadata read from one weight file."""

    path: Path
    tensors: dict[str, torch.Tensor]
    meta: dict


def sidecar_path(path: str | os.PathLike) -> Path:
    """`x.safetensors` -> `x.json` (the sidecar lives next to the weights)."""
    return Path(path).with_suffix(".json")


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def tensors_sha256(tensors: dict[str, torch.Tensor]) -> str:
    """Identity hash of a set of CPU tensors: SHA-256 of their safetensors serialisation without
    metadata (names, dtypes, shapes and bytes; equal to the file hash of a `lowloss-weights/1` file)."""
    return hashlib.sha256(save(tensors)).hexdigest()


def save_weights(path: str | os.PathLike, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    """Write `path` (safetensors, metadata in its header) atomically, then its sidecar copy.

    `meta` is free-form JSON (architecture, dataset, seed, metrics …); the format tag, package version,
    tensor shapes and the tensors' identity hash `sha256` are added here.
    """
    path = Path(path)
    tensors = {name: t.detach().to("cpu").contiguous() for name, t in tensors.items()}
    check_finite(path, tensors)
    meta = dict(meta)
    meta.update(
        format=FORMAT,
        lowloss_version=__version__,
        tensors={
            name: {"shape": list(t.shape), "dtype": str(t.dtype).removeprefix("torch.")} for name, t in tensors.items()
        },
        sha256=tensors_sha256(tensors),
    )
    write_bytes_atomic(path, save(tensors, metadata={HEADER_KEY: json.dumps(meta, sort_keys=True)}))
    write_json_atomic(sidecar_path(path), meta)


def read_meta(path: str | os.PathLike) -> dict:
    """The metadata of weight file `path`, from its header, without loading the tensors.

    Rewrites the sidecar when it is missing or stale (a failure to do so only warns). A file of the
    earlier format is read from its sidecar.
    """
    path = Path(path)
    require_file(path)
    try:
        with safe_open(str(path), "pt") as handle:
            header = handle.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise ArtifactError(f"{path}: not a readable safetensors file ({exc})") from None
    if HEADER_KEY not in header:
        return _legacy_meta(path)
    try:
        meta = json.loads(header[HEADER_KEY])
    except json.JSONDecodeError as exc:
        raise ArtifactError(f"{path}: metadata in the header is not valid JSON ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ArtifactError(f"{path}: header metadata is not lowloss's (expected format {FORMAT!r})")
    _refresh_sidecar(path, meta)
    return meta


def _legacy_meta(path: Path) -> dict:
    """The sidecar of a `lowloss-weights/1` file (plain safetensors; the sidecar held everything)."""
    side = sidecar_path(path)
    if not side.exists():
        raise ArtifactError(f"{path}: no lowloss metadata in its header and sidecar {side.name} is missing")
    try:
        meta = json.loads(side.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{side}: sidecar is not valid JSON ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != LEGACY_FORMAT:
        raise ArtifactError(f"{side}: not a lowloss sidecar (expected format {LEGACY_FORMAT!r})")
    return meta


def _refresh_sidecar(path: Path, meta: dict) -> None:
    side, text = sidecar_path(path), json_text(meta)
    try:
        current = side.read_text()
    except (OSError, UnicodeDecodeError):
        current = None
    if current == text:
        return
    try:
        write_text_atomic(side, text)
        logger.warning(
            "%s: sidecar %s was %s; rewritten from the file's header",
            path,
            side.name,
            "missing" if current is None else "stale",
        )
    except ArtifactError as exc:
        logger.warning("%s: sidecar %s is out of date and cannot be rewritten (%s)", path, side.name, exc)


def load_weights(path: str | os.PathLike) -> Artifact:
    """Load, validate and return a weight file: hash, tensor names and shapes, finiteness."""
    path = Path(path)
    meta = read_meta(path)
    legacy = meta["format"] == LEGACY_FORMAT
    if legacy and file_sha256(path) != meta.get("sha256"):
        raise ArtifactError(f"{path}: contents do not match its sidecar (hash differs: corrupt, truncated or replaced)")
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ArtifactError(f"{path}: not a readable safetensors file ({exc})") from None
    if not legacy and tensors_sha256(tensors) != meta.get("sha256"):
        raise ArtifactError(f"{path}: tensors do not match the hash in its header (corrupt or altered)")
    expected = meta.get("tensors", {})
    if set(expected) != set(tensors):
        raise ArtifactError(f"{path}: tensors {sorted(tensors)} do not match the metadata's {sorted(expected)}")
    for name, tensor in tensors.items():
        if list(tensor.shape) != expected[name]["shape"]:
            raise ArtifactError(
                f"{path}: tensor {name!r} has shape {list(tensor.shape)}, the metadata says {expected[name]['shape']}"
            )
    check_finite(path, tensors)
    return Artifact(path=path, tensors=tensors, meta=meta)


def check_finite(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    """Refuse, naming the file and the tensor, floating-point values that are NaN or Inf."""
    for name, tensor in tensors.items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise ArtifactError(f"{path}: tensor {name!r} contains NaN or Inf values")
