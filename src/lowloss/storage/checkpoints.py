"""Resumable runs: run identities, per-step random generators, and the checkpoint beside an output.

Endpoint training, curve fitting and connector fitting all save a checkpoint while they run and
resume from it when run again with the same configuration (`identity`). A checkpoint that cannot be
trusted never blocks a rerun: it is set aside with a warning and the run starts afresh.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import torch

from lowloss.storage.atomic import ArtifactError
from lowloss.storage.file_kinds import CHECKPOINT
from lowloss.storage.weights import Artifact, load_weights, sidecar_path

logger = logging.getLogger(__name__)

UNTRUSTED_SUFFIX = ".untrusted"


def config_hash(payload: dict) -> str:
    """Short stable hash of a JSON-able dict (what produced an artifact)."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def epoch_generator(seed: int, epoch: int, salt: int = 0) -> torch.Generator:
    """A CPU generator that depends only on (seed, epoch, salt)."""
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch * 101 + salt)


def checkpoint_path(out: Path) -> Path:
    """Where the resumable checkpoint of `out` lives while its run goes on."""
    return out.with_name(out.stem + ".ckpt.safetensors")


def resumable_checkpoint(path: Path, identity: str) -> Artifact | None:
    """The checkpoint at `path` when it was written by this very run (same `identity`), else None.

    A checkpoint left by a run of another configuration (say, the epochs changed after an
    interruption) cannot be resumed; it is discarded with a warning and the run starts afresh, which
    is what re-running a changed configuration means. A checkpoint that does not load (corrupt,
    unreadable) is renamed to `<name>.untrusted` for inspection, with a warning, and the run starts
    afresh too.
    """
    if not os.path.lexists(path):
        return None
    try:
        artifact = load_weights(path)
    except ArtifactError as exc:
        aside = path.with_name(path.name + UNTRUSTED_SUFFIX)
        os.replace(path, aside)
        sidecar_path(path).unlink(missing_ok=True)
        logger.warning("%s; set aside as %s, starting afresh", exc, aside.name)
        return None
    if artifact.meta.get("kind") == CHECKPOINT and artifact.meta.get("identity") == identity:
        return artifact
    logger.warning("%s: checkpoint of another configuration, starting afresh", path)
    _remove(path)
    return None


def discard_checkpoint(out: Path) -> None:
    """Remove the checkpoint of `out` (and its sidecar) once `out` itself is written."""
    _remove(checkpoint_path(out))


def _remove(path: Path) -> None:
    path.unlink(missing_ok=True)
    sidecar_path(path).unlink(missing_ok=True)
