"""Weights as one unit: a safetensors file whose header holds the metadata, and a JSON copy beside it.

The header (`lowloss.storage.header`) is the whole truth: the metadata, covered by its checksum, and the
tensors' identity hash `sha256`, the SHA-256 of the tensors serialised as safetensors without metadata
(which is also the file hash of a weight file of format 1). One atomic rename publishes a new version
(`lowloss.storage.atomic`); the sidecar (`x.json`) follows as a copy. A reader takes the header and the
tensors from one open file and checks one against the other. Nothing here unpickles.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import torch
from safetensors import SafetensorError
from safetensors.torch import load, save

from lowloss import __version__
from lowloss.storage.atomic import ArtifactError, write_bytes_atomic, write_json_atomic
from lowloss.storage.file_kinds import CHECKPOINT, checkpoint_output
from lowloss.storage.header import (
    FORMAT,
    HEADER_KEY,
    Header,
    canonical_json,
    check_meta,
    meta_checksum,
    read_consistent,
    read_header,
    read_meta,
    refresh_sidecar,
    sidecar_path,
)

# `read_meta` and `sidecar_path` live with the header and are offered here too, beside the tensors' reader.
__all__ = ["Artifact", "load_weights", "read_meta", "save_weights", "sidecar_path", "tensors_sha256"]


@dataclass(frozen=True)
class Artifact:
    """Tensors (on CPU) and the metadata read from one weight file."""

    path: Path
    tensors: dict[str, torch.Tensor]
    meta: dict


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

    `meta` is JSON (architecture, dataset, seed, metrics …) that must pass the schema it will be read with;
    the format tag, package version, tensor shapes, the tensors' identity hash `sha256`, the checksum of
    the whole and, for a checkpoint, the name of the output it is for are added here.
    """
    path = Path(path)
    tensors = {name: t.detach().to("cpu").contiguous() for name, t in tensors.items()}
    check_finite(path, tensors)
    meta = {key: value for key, value in meta.items() if key != "checksum"}
    meta.update(
        format=FORMAT,
        lowloss_version=__version__,
        tensors={
            name: {"shape": list(t.shape), "dtype": str(t.dtype).removeprefix("torch.")} for name, t in tensors.items()
        },
        sha256=tensors_sha256(tensors),
    )
    if meta.get("kind") == CHECKPOINT:
        meta["output"] = checkpoint_output(path).name
    meta["checksum"] = meta_checksum(meta)
    check_meta(path, meta)
    write_bytes_atomic(path, save(tensors, metadata={HEADER_KEY: canonical_json(meta)}))
    write_json_atomic(sidecar_path(path), meta)


def load_weights(path: str | os.PathLike) -> Artifact:
    """Load a weight file whose header, hash and tensors agree (finite, of the dtypes and shapes the header
    names); the sidecar is refreshed from the header."""
    path = Path(path)
    (header, tensors), current = read_consistent(path, _read_weights)
    if current and not header.legacy:
        refresh_sidecar(path, header.meta)
    return Artifact(path=path, tensors=tensors, meta=header.meta)


def _read_weights(path: Path, handle: BinaryIO, size: int) -> tuple[Header, dict[str, torch.Tensor]]:
    """Header and tensors of one open file, checked against each other (the header first, so a bad one
    allocates nothing: the tensors it names tile the file's bytes)."""
    header = read_header(path, handle, size)
    handle.seek(0)
    blob = handle.read(size + 1)
    if len(blob) != size:
        raise ArtifactError(f"{path}: changed size while being read")
    try:
        loaded = load(blob)
    except (SafetensorError, ValueError) as exc:
        raise ArtifactError(f"{path}: not a readable safetensors file ({exc})") from None
    tensors = {name: loaded[name] for name in sorted(loaded)}  # by name, as safetensors' own files read
    if header.legacy and hashlib.sha256(blob).hexdigest() != header.meta["sha256"]:
        raise ArtifactError(f"{path}: contents do not match its sidecar (hash differs: corrupt, truncated or replaced)")
    if not header.legacy and tensors_sha256(tensors) != header.meta["sha256"]:
        raise ArtifactError(f"{path}: tensors do not match the hash in its header (corrupt or altered)")
    check_finite(path, tensors)
    return header, tensors


def check_finite(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    """Refuse, naming the file and the tensor, floating-point values that are NaN or Inf."""
    for name, tensor in tensors.items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise ArtifactError(f"{path}: tensor {name!r} contains NaN or Inf values")
