"""What each kind of lowloss file is, so that a file given where another kind is expected is named.

`lowloss connect curve.safetensors …` then says that the file is a Garipov curve and that a trained
model was expected, instead of a puzzle about tensor names. The kinds are the `kind` a weight file's
metadata records, and the files lowloss writes without weights (manifests and tables). Identifying a file
reads its sidecar, its name and its first line only: nothing is loaded.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from lowloss.errors import LowlossError
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


def identify(path: str | os.PathLike) -> tuple[str | None, str | None]:
    """(kind, description) of a lowloss file, or (None, None) when it is none (or unreadable: the
    caller's own loading then reports the problem)."""
    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            kind = json.loads(path.with_suffix(".json").read_text()).get("kind") or ""
            return kind, describe(kind)
        if path.suffix == ".json":
            return _identify_json(path)
        if path.suffix == ".csv":
            if is_path_table(path):
                return PATH_TABLE, KINDS[PATH_TABLE]
            if REPORT_TABLE_NAME.fullmatch(path.name):
                return REPORT_TABLE, KINDS[REPORT_TABLE]
    except (OSError, ValueError, AttributeError):
        pass
    return None, None


def describe(kind: str | None) -> str:
    """What a file of `kind` is, in words (`a Garipov curve (from `lowloss fit-curve`)`)."""
    return KINDS.get(kind, f"a weight file of kind {kind!r}")


def _identify_json(path: Path) -> tuple[str | None, str | None]:
    content = json.loads(path.read_text())
    if isinstance(content, dict) and content.get("format") == MODEL_SET_FORMAT:
        return MODEL_SET, KINDS[MODEL_SET]
    weights = path.with_suffix(".safetensors")
    if weights.is_file():
        return SIDECAR, f"the JSON sidecar of {weights.name}"
    return None, None


def require_kind(path: str | os.PathLike, expected: str) -> None:
    """Stop with one line naming what `path` is when it is a lowloss file of another kind than `expected`."""
    kind, description = identify(path)
    if kind is not None and kind != expected:
        raise LowlossError(f"{path}: this is {description}, but {KINDS[expected]} is expected here")


def require_meta_kind(path: str | os.PathLike, meta: dict, expected: str) -> None:
    """Stop with one line when a weight file's metadata records another kind than `expected`."""
    kind = meta.get("kind")
    if kind != expected:
        raise LowlossError(f"{path}: not {KINDS[expected]}; it is {describe(kind)}")
