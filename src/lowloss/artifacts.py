"""Weights as one atomic unit: a safetensors file whose header holds the metadata, and a JSON copy.

The header's `__metadata__` carries the whole metadata as JSON, including `sha256`, the identity hash
of the tensors: the SHA-256 of the tensors serialised as safetensors without metadata, which is also
the file hash of a weight file written before the header held the metadata. One rename publishes a
new version, so a weight file is, at every instant, absent, its previous version or its new version,
whole. The sidecar beside it (`x.json`) is a readable copy of the header for people and for tools that
read JSON; every read rewrites it when it is missing or differs from the header (after a kill between
the two renames, say), and nothing trusts it over the header.

Files of the earlier format (`lowloss-weights/1`: plain safetensors, the metadata and the hash of the
whole file only in the sidecar) are read as before, from their sidecar.

Every write goes to a temp file in the target's folder (`.x.safetensors.*.tmp`), flushed to disk,
then renamed over the target, and the folder is flushed too. The writer holds a lock on its temp
file while it lives, so the next write to the same target can tell leftovers of killed runs (nobody
holds them) from writes in progress, and removes the leftovers. Nothing here unpickles.
"""

from __future__ import annotations

import errno
import fcntl
import glob
import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save

from lowloss import __version__
from lowloss.errors import LowlossError

FORMAT = "lowloss-weights/2"
LEGACY_FORMAT = "lowloss-weights/1"
HEADER_KEY = "lowloss"
"""The key of `__metadata__` that holds the metadata JSON."""
TEMP_SUFFIX = ".tmp"

logger = logging.getLogger(__name__)


class ArtifactError(LowlossError):
    """A weight file or sidecar that cannot be trusted."""


@dataclass(frozen=True)
class Artifact:
    """Tensors (on CPU) and the metadata read from one weight file."""

    path: Path
    tensors: dict[str, torch.Tensor]
    meta: dict


def sidecar_path(path: str | os.PathLike) -> Path:
    """`x.safetensors` -> `x.json` (the sidecar lives next to the weights)."""
    return Path(path).with_suffix(".json")


def require_file(path: str | os.PathLike) -> None:
    """Raise one clear error unless `path` is a file this process can open (missing, a symbolic link
    loop, a folder and a permission problem each say so)."""
    try:
        with open(path, "rb"):
            pass
    except FileNotFoundError:
        raise ArtifactError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise ArtifactError(f"{path}: is a folder, not a file") from None
    except OSError as exc:
        reason = "symbolic link loop" if exc.errno == errno.ELOOP else exc.strerror
        raise ArtifactError(f"{path}: cannot be read ({reason})") from None


# --- atomic writes ----------------------------------------------------------------------------------

def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Atomically replace `path` by `data`."""
    with _temp_file(Path(path)) as (fd, _):
        view = memoryview(data)
        while view:  # os.write may write less than asked (a signal, a nearly full disk)
            view = view[os.write(fd, view):]


def write_atomic(path: str | os.PathLike, write: Callable[[Path], None]) -> None:
    """Atomically replace `path` by what `write(tmp)` writes to the temp file `tmp` (for writers that
    need a file name, like matplotlib's savefig)."""
    with _temp_file(Path(path)) as (_, tmp):
        write(tmp)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Atomically write a text file (CSV, JSON, Markdown)."""
    write_bytes_atomic(path, text.encode())


def write_json_atomic(path: str | os.PathLike, obj: dict) -> None:
    """Atomically write a JSON file, pretty-printed."""
    write_text_atomic(path, _json_text(obj))


@contextmanager
def _temp_file(path: Path) -> Iterator[tuple[int, Path]]:
    """A locked temp file beside `path`, flushed and renamed onto `path` when the block ends.

    A crash at any point leaves either the old file or the new one, never half of one; an OSError
    (a full disk, a read-only folder) becomes one error naming `path`, and the temp file goes.
    """
    fd, tmp = -1, None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_leftovers(path)
        fd, tmp = _locked_temp(path)
        yield fd, tmp
        os.fsync(fd)
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; results are shared like any other file
        os.replace(tmp, path)
        tmp = None
        _fsync_folder(path.parent)
    except OSError as exc:
        raise ArtifactError(f"{path}: cannot write ({exc.strerror or exc})") from None
    finally:
        if fd >= 0:
            os.close(fd)  # releases the lock, after the rename
        if tmp is not None:
            tmp.unlink(missing_ok=True)


def _locked_temp(path: Path) -> tuple[int, Path]:
    """mkstemp beside `path`, locked; retried if a concurrent cleanup removed it before the lock."""
    while True:
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            if os.stat(name).st_ino == os.fstat(fd).st_ino:
                return fd, Path(name)
        except FileNotFoundError:
            pass
        os.close(fd)


def remove_leftovers(path: str | os.PathLike) -> list[Path]:
    """Delete the temp files of earlier writes to `path` whose writer is gone (no lock held)."""
    path = Path(path)
    removed = []
    for name in glob.glob(os.path.join(glob.escape(str(path.parent)), f".{glob.escape(path.name)}.*{TEMP_SUFFIX}")):
        try:
            fd = os.open(name, os.O_RDONLY)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.unlink(name)
            removed.append(Path(name))
        except OSError:  # locked: a write in progress
            pass
        finally:
            os.close(fd)
    if removed:
        logger.info("removed %d temp file(s) left by an interrupted write of %s", len(removed), path)
    return removed


def _fsync_folder(folder: Path) -> None:
    """Make a rename in `folder` durable (a power cut after it cannot bring the old file back)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _json_text(obj: dict) -> str:
    return json.dumps(obj, indent=2, sort_keys=True) + "\n"


# --- weight files -----------------------------------------------------------------------------------

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
    _check_finite(path, tensors)
    meta = dict(meta)
    meta.update(
        format=FORMAT,
        lowloss_version=__version__,
        tensors={name: {"shape": list(t.shape), "dtype": str(t.dtype).removeprefix("torch.")}
                 for name, t in tensors.items()},
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
    side, text = sidecar_path(path), _json_text(meta)
    try:
        current = side.read_text()
    except (OSError, UnicodeDecodeError):
        current = None
    if current == text:
        return
    try:
        write_text_atomic(side, text)
        logger.warning("%s: sidecar %s was %s; rewritten from the file's header", path, side.name,
                       "missing" if current is None else "stale")
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
            raise ArtifactError(f"{path}: tensor {name!r} has shape {list(tensor.shape)}, "
                                f"the metadata says {expected[name]['shape']}")
    _check_finite(path, tensors)
    return Artifact(path=path, tensors=tensors, meta=meta)


def _check_finite(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    for name, tensor in tensors.items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise ArtifactError(f"{path}: tensor {name!r} contains NaN or Inf values")
