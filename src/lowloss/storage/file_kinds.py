"""What each kind of lowloss file is, and the names of the files that go with one, so that a file given where
another kind is expected is named.

`lowloss connect curve.safetensors …` then says that the file is a Garipov curve and that a trained
model was expected, instead of a puzzle about tensor names. The kinds are the `kind` a weight file's
metadata records, and the files lowloss writes without weights (manifests and tables). Identifying a file
reads a weight file's header (never its sidecar), a JSON file, or a table's first line: no tensor is
loaded and torch is not imported.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from lowloss.errors import LowlossError
from lowloss.storage.atomic import ArtifactError
from lowloss.storage.header import read_consistent, read_header
from lowloss.storage.path_table import is_path_table

MODEL = "model"
CURVE = "curve"
CONNECTOR = "connector"
MATCHING = "matching"
CHECKPOINT = "checkpoint"
BREAKPOINT = "breakpoint"
ENSEMBLE = "ensemble"
MODEL_SET = "model-set"
PATH_TABLE = "path-table"
REPORT_TABLE = "report-table"
SIDECAR = "sidecar"

KINDS = {
    MODEL: "a trained model (from `lowloss train`)",
    CURVE: "a Garipov curve (from `lowloss fit-curve`)",
    CONNECTOR: "a fitted connector ν (from `lowloss fit-connector`)",
    MATCHING: "an OT matching (from `lowloss match`)",
    CHECKPOINT: "a training checkpoint (resumed by the command that wrote it)",
    BREAKPOINT: "a breakpoint of a saved path (from `lowloss connect --save-path`)",
    MODEL_SET: "a model set manifest (from `lowloss model-set`)",
    ENSEMBLE: "an ensemble (from `lowloss ensemble`)",
    PATH_TABLE: "a path table (from `lowloss connect`)",
    REPORT_TABLE: "a table of the report (from `lowloss report`)",
}
MODEL_SET_FORMAT = "lowloss-model-set/1"
"""The `format` of a model set manifest."""
REPORT_TABLE_NAME = re.compile(r"table\w*\.csv")
"""The report's tables are `table1.csv`, `table2.csv`, …"""
PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")
"""A user's PyTorch checkpoints (read with torch.load(weights_only=True) for a `--model`): never a lowloss file."""
WEIGHTS_SUFFIX = ".safetensors"
CHECKPOINT_SUFFIX = ".ckpt" + WEIGHTS_SUFFIX


def checkpoint_path(out: str | os.PathLike) -> Path:
    """Where the resumable checkpoint of weight file `out` lives while its run goes on (`x.ckpt.safetensors`)."""
    out = Path(out)
    return out.with_name(out.name.removesuffix(WEIGHTS_SUFFIX) + CHECKPOINT_SUFFIX)


def checkpoint_output(checkpoint: str | os.PathLike) -> Path:
    """The weight file a checkpoint is for: `x.ckpt.safetensors` -> `x.safetensors`."""
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(checkpoint.name.removesuffix(CHECKPOINT_SUFFIX) + WEIGHTS_SUFFIX)


def identify(path: str | os.PathLike) -> tuple[str | None, str | None]:
    """(kind, description) of a lowloss file, or (None, None) when it is none (or unreadable: the
    caller's own loading then reports the problem)."""
    path = Path(path)
    try:
        if path.suffix == WEIGHTS_SUFFIX:
            kind = weights_kind(path)
            return kind, describe(kind)
        if path.suffix == ".json":
            return _identify_json(path)
        if path.suffix == ".csv":
            if is_path_table(path):
                return PATH_TABLE, KINDS[PATH_TABLE]
            if REPORT_TABLE_NAME.fullmatch(path.name):
                return REPORT_TABLE, KINDS[REPORT_TABLE]
    except (OSError, ValueError, AttributeError, ArtifactError):
        pass
    return None, None


def weights_kind(path: str | os.PathLike) -> str:
    """The kind a weight file's header records (its header checked, its tensors not read)."""
    header, _ = read_consistent(path, read_header)
    return header.meta["kind"]


def describe(kind: str | None) -> str:
    """What a file of `kind` is, in words (`a Garipov curve (from `lowloss fit-curve`)`)."""
    return KINDS.get(kind, f"a weight file of kind {kind!r}")


def _identify_json(path: Path) -> tuple[str | None, str | None]:
    content = json.loads(path.read_text())
    if isinstance(content, dict) and content.get("format") == MODEL_SET_FORMAT:
        return MODEL_SET, KINDS[MODEL_SET]
    weights = path.with_suffix(WEIGHTS_SUFFIX)
    if weights.is_file():
        return SIDECAR, f"the JSON sidecar of {weights.name}"
    return None, None


def require_not_checkpoint(path: str | os.PathLike) -> None:
    """Stop with one line saying what to do when a user's PyTorch checkpoint is given for a lowloss weight file."""
    if Path(path).suffix in PICKLE_SUFFIXES:
        raise LowlossError(
            f"{path}: a PyTorch checkpoint, not a lowloss model file: name its network with --model REF "
            f"(from Python: load it into its nn.Module)"
        )


def require_kind(path: str | os.PathLike, expected: str) -> None:
    """Stop with one line naming what `path` is when it is a lowloss file of another kind than `expected`, or
    a weight file whose header does not pass its checks."""
    if Path(path).suffix == WEIGHTS_SUFFIX:
        weights_kind(path)  # a bad header is refused here, before anything is loaded
    kind, description = identify(path)
    if kind is not None and kind != expected:
        raise LowlossError(f"{path}: this is {description}, but {KINDS[expected]} is expected here")


def require_meta_kind(path: str | os.PathLike, meta: dict, expected: str) -> None:
    """Stop with one line when a weight file's metadata records another kind than `expected`."""
    kind = meta.get("kind")
    if kind != expected:
        raise LowlossError(f"{path}: not {KINDS[expected]}; it is {describe(kind)}")
