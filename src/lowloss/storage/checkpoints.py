"""Resumable runs: run identities, per-step random generators, and the checkpoint beside an output.

Endpoint training, curve fitting and connector fitting all save a checkpoint `x.ckpt.safetensors` while
they run towards `x.safetensors` and resume from it when run again with the same configuration. A
checkpoint carries the identity of its final output: the output's name (`output`) and the hash of the
configuration that makes it (`identity`, the output's `config_hash`). Nothing here deletes a file that is
not this run's own checkpoint: a checkpoint of another configuration or output, or one that does not load,
is set aside under a name of its own, with a warning that says where; a file of another kind at the
checkpoint's name is refused (the commands refuse it before they start, `lowloss.storage.destinations`).
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
from pathlib import Path

import torch

from lowloss.errors import LowlossError
from lowloss.storage.atomic import ArtifactError
from lowloss.storage.file_kinds import CHECKPOINT, checkpoint_output, checkpoint_path, describe
from lowloss.storage.header import parse_json, read_consistent, read_header, read_meta
from lowloss.storage.weights import Artifact, load_weights, sidecar_path

__all__ = [
    "checkpoint_path",
    "config_hash",
    "discard_checkpoint",
    "epoch_generator",
    "resumable_checkpoint",
    "set_aside",
]

logger = logging.getLogger(__name__)

UNTRUSTED = "untrusted"


def config_hash(payload: dict) -> str:
    """Short stable hash of a JSON-able dict (what produced an artifact)."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def epoch_generator(seed: int, epoch: int, salt: int = 0) -> torch.Generator:
    """A CPU generator that depends only on (seed, epoch, salt)."""
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch * 101 + salt)


def resumable_checkpoint(path: Path, identity: str) -> Artifact | None:
    """The checkpoint at `path` when it was written by this very run (same output, same `identity`), else None.

    A checkpoint of another configuration (say, the epochs changed after an interruption) or of another
    output cannot be resumed: it is set aside as `x.ckpt.<its identity>.safetensors` and the run starts
    afresh. One that does not load (corrupt, unreadable) is set aside as `x.ckpt.untrusted.safetensors`.
    A checkpoint that vanishes while it is read (an identical run just finished) means a fresh start too.
    """
    path = Path(path)
    if not os.path.lexists(path):
        return None
    try:
        artifact = load_weights(path)
    except ArtifactError as exc:
        if not os.path.lexists(path):
            return None
        aside = set_aside(path, UNTRUSTED)
        logger.warning("%s; set aside as %s, starting afresh", exc, aside.name if aside else "(gone meanwhile)")
        return None
    meta = artifact.meta
    if meta["kind"] != CHECKPOINT:
        raise LowlossError(f"{path}: is {describe(meta['kind'])}, not a checkpoint; move it to run this command")
    output = checkpoint_output(path).name
    if meta.get("output", output) == output and meta["identity"] == identity:
        return artifact
    aside = set_aside(path, meta["identity"])
    logger.warning(
        "%s: checkpoint of another configuration%s; set aside as %s, starting afresh",
        path,
        "" if meta.get("output", output) == output else f" (for {meta['output']})",
        aside.name if aside else "(gone meanwhile)",
    )
    return None


def set_aside(path: Path, label: str) -> Path | None:
    """Move weight file `path` and its sidecar to `<stem>.<label>.safetensors` (or `…-2`, `-3` … when that is
    taken: nothing is overwritten); the new name, or None when `path` vanished meanwhile."""
    stem = path.name.removesuffix(path.suffix)
    for number in range(1, 1000):
        aside = path.with_name(f"{stem}.{label}{'' if number == 1 else f'-{number}'}{path.suffix}")
        if os.path.lexists(aside) or os.path.lexists(sidecar_path(aside)):
            continue
        try:
            _move_without_replacing(path, aside)
        except FileExistsError:
            continue
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise ArtifactError(f"{path}: cannot be set aside as {aside.name} ({exc.strerror})") from None
        if sidecar_path(path).exists():
            os.replace(sidecar_path(path), sidecar_path(aside))
        return aside
    raise ArtifactError(f"{path}: cannot be set aside (999 earlier copies beside it)")


def _move_without_replacing(source: Path, target: Path) -> None:
    """Rename `source` to `target` unless `target` exists (a hard link fails rather than replace a file that
    appeared meanwhile; where the file system has none, a rename after the check)."""
    try:
        os.link(source, target)
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK, errno.EXDEV):
            raise
        if os.path.lexists(target):
            raise FileExistsError(errno.EEXIST, "exists", str(target)) from None
        os.rename(source, target)
        return
    source.unlink(missing_ok=True)


def discard_checkpoint(out: Path) -> None:
    """Remove the checkpoint of `out` (and its sidecar) once `out` itself is written, when it is the
    checkpoint of the run that wrote `out` (its identity is `out`'s `config_hash`); anything else stays.

    An identical run may remove the checkpoint between this run's write of its weights and of its sidecar:
    a sidecar left without its weights is removed too when it names the same run.
    """
    path, name = checkpoint_path(out), Path(out).name
    try:
        made_by = read_meta(out).get("config_hash")
    except ArtifactError:
        return
    try:
        meta = read_consistent(path, read_header)[0].meta
    except ArtifactError:
        if not os.path.lexists(path) and _names_run(_orphan_sidecar(path), made_by, name):
            sidecar_path(path).unlink(missing_ok=True)
        return
    if _names_run(meta, made_by, name):
        path.unlink(missing_ok=True)
        sidecar_path(path).unlink(missing_ok=True)
    else:
        logger.warning("%s: not the checkpoint of this run of %s; left as it is", path, out)


def _names_run(meta: object, identity: str | None, output: str) -> bool:
    """Whether `meta` is a checkpoint's, of the run with `identity`, towards the file named `output`."""
    return (
        isinstance(meta, dict)
        and meta.get("kind") == CHECKPOINT
        and meta.get("identity") == identity
        and meta.get("output", output) == output
    )


def _orphan_sidecar(path: Path) -> object:
    """What the sidecar of a vanished checkpoint `path` holds (None when missing or not JSON)."""
    try:
        return parse_json(sidecar_path(path).read_bytes(), str(sidecar_path(path)))
    except (OSError, ArtifactError):
        return None
