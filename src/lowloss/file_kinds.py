"""What each kind of lowloss file is, so that a file given where another kind is expected is named.

`lowloss connect curve.safetensors …` then says that the file is a Garipov curve and that a trained
model was expected, instead of a puzzle about tensor names. Judged from the sidecar, the name and the
first line of the file only: nothing is loaded.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from lowloss.errors import LowlossError

KINDS = {
    "model": "a trained model (from `lowloss train`)",
    "curve": "a Garipov curve (from `lowloss fit-curve`)",
    "connector": "a fitted connector ν (from `lowloss fit-connector`)",
    "matching": "an OT matching (from `lowloss match`)",
    "checkpoint": "a training checkpoint (resumed by the command that wrote it)",
    "breakpoint": "a breakpoint of a saved path (from `lowloss connect --save-path`)",
    "model-set": "a model set manifest (from `lowloss model-set`)",
    "ensemble": "an ensemble (from `lowloss ensemble`)",
    "path-table": "a path table (from `lowloss connect`)",
    "report-table": "a table of the report (from `lowloss report`)",
}
PATH_TABLE_HEADER = {"method", "leg", "t", "split", "acc", "loss"}


def identify(path: str | os.PathLike) -> tuple[str | None, str | None]:
    """(kind, description) of a lowloss file, or (None, None) when it is none (or unreadable: the
    caller's own loading then reports the problem)."""
    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            kind = json.loads(path.with_suffix(".json").read_text()).get("kind") or ""
            return kind, KINDS.get(kind, f"a weight file of kind {kind!r}")
        if path.suffix == ".json":
            return _identify_json(path)
        if path.suffix == ".csv":
            header = set(path.open().readline().strip().split(","))
            if PATH_TABLE_HEADER <= header:
                return "path-table", KINDS["path-table"]
            if path.name.startswith("table"):
                return "report-table", KINDS["report-table"]
    except (OSError, ValueError, AttributeError):
        pass
    return None, None


def _identify_json(path: Path) -> tuple[str | None, str | None]:
    from lowloss.modelset import FORMAT as MODEL_SET_FORMAT

    content = json.loads(path.read_text())
    if isinstance(content, dict) and content.get("format") == MODEL_SET_FORMAT:
        return "model-set", KINDS["model-set"]
    weights = path.with_suffix(".safetensors")
    if weights.is_file():
        return "sidecar", f"the JSON sidecar of {weights.name}"
    return None, None


def require_kind(path: str | os.PathLike, expected: str) -> None:
    """Stop with one line naming what `path` is when it is a lowloss file of another kind than `expected`."""
    kind, description = identify(path)
    if kind is not None and kind != expected:
        raise LowlossError(f"{path}: this is {description}, but {KINDS[expected]} is expected here")
