"""Weights as safetensors plus a JSON sidecar: atomic writes, safe loading, clear errors.

Nothing here unpickles: safetensors holds only tensors, the sidecar only JSON. The sidecar records the
SHA-256 of the tensor file, so a sidecar that belongs to another file is caught on load.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from lowloss import __version__
from lowloss.errors import LowlossError

FORMAT = "lowloss-weights/1"


class ArtifactError(LowlossError):
    """A weight file or sidecar that cannot be trusted."""


@dataclass(frozen=True)
class Artifact:
    """Tensors (on CPU) and the sidecar metadata read from one weight file."""

    path: Path
    tensors: dict[str, torch.Tensor]
    meta: dict


def sidecar_path(path: str | os.PathLike) -> Path:
    """`x.safetensors` -> `x.json` (the sidecar lives next to the weights)."""
    return Path(path).with_suffix(".json")


def write_atomic(path: str | os.PathLike, write: Callable[[Path], None]) -> None:
    """Call `write(tmp)` on a temp file in the target folder, then rename it onto `path`.

    A crash at any point leaves either the old file or the new one, never half of one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; results are shared like any other file
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Atomically write a text file (CSV, JSON, Markdown)."""
    write_atomic(path, lambda tmp: tmp.write_text(text))


def write_json_atomic(path: str | os.PathLike, obj: dict) -> None:
    """Atomically write a JSON file, pretty-printed."""
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def save_weights(path: str | os.PathLike, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    """Write `path` (safetensors) and its sidecar atomically; the sidecar is written last.

    `meta` is free-form JSON (architecture, dataset, seed, metrics …); the format tag, package version,
    tensor shapes and the file hash are added here.
    """
    path = Path(path)
    tensors = {name: t.detach().to("cpu").contiguous() for name, t in tensors.items()}
    _check_finite(path, tensors)
    write_atomic(path, lambda tmp: save_file(tensors, str(tmp)))
    sidecar = dict(meta)
    sidecar.update(
        format=FORMAT,
        lowloss_version=__version__,
        tensors={name: {"shape": list(t.shape), "dtype": str(t.dtype).removeprefix("torch.")}
                 for name, t in tensors.items()},
        sha256=file_sha256(path),
    )
    write_json_atomic(sidecar_path(path), sidecar)


def read_meta(path: str | os.PathLike) -> dict:
    """Read and check the sidecar of `path` without loading the tensors."""
    path = Path(path)
    side = sidecar_path(path)
    if not path.exists():
        raise ArtifactError(f"{path}: file not found")
    if not side.exists():
        raise ArtifactError(f"{path}: sidecar {side.name} is missing")
    try:
        meta = json.loads(side.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{side}: sidecar is not valid JSON ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ArtifactError(f"{side}: not a lowloss sidecar (expected format {FORMAT!r})")
    return meta


def load_weights(path: str | os.PathLike) -> Artifact:
    """Load, validate and return a weight file: hash, tensor names and shapes, finiteness."""
    path = Path(path)
    meta = read_meta(path)
    if file_sha256(path) != meta.get("sha256"):
        raise ArtifactError(f"{path}: contents do not match its sidecar (hash differs: corrupt, truncated or replaced)")
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ArtifactError(f"{path}: not a readable safetensors file ({exc})") from None
    expected = meta.get("tensors", {})
    if set(expected) != set(tensors):
        raise ArtifactError(f"{path}: tensors {sorted(tensors)} do not match the sidecar's {sorted(expected)}")
    for name, tensor in tensors.items():
        if list(tensor.shape) != expected[name]["shape"]:
            raise ArtifactError(f"{path}: tensor {name!r} has shape {list(tensor.shape)}, "
                                f"sidecar says {expected[name]['shape']}")
    _check_finite(path, tensors)
    return Artifact(path=path, tensors=tensors, meta=meta)


def _check_finite(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    for name, tensor in tensors.items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise ArtifactError(f"{path}: tensor {name!r} contains NaN or Inf values")
