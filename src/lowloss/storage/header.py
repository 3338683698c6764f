"""The header of a weight file, read without torch: the table of tensors and lowloss's metadata, checked
against their schema and the metadata's checksum before one byte of tensor data is read.

A weight file is a safetensors file: 8 bytes giving the header's length n, n bytes of JSON naming every
tensor's dtype, shape and byte range, then the tensors. The header's `__metadata__` holds, under `lowloss`,
the metadata as JSON; it is the whole truth about the file. In format `lowloss-weights/3` its `checksum`,
the SHA-256 of the rest of it, covers every key, and its `sha256` (checked when the tensors are loaded)
covers the tensors, so no byte of a file changes unnoticed. The JSON sidecar beside it (`x.json`) is a copy
for people, rewritten from the header whenever it differs, never read before it.

Earlier formats stay readable: `lowloss-weights/2` (the metadata in the header, no checksum) and
`lowloss-weights/1` (plain safetensors; the metadata, with the hash of the whole file, only in the sidecar).

A reader takes everything from one open file, so a writer's rename (`lowloss.storage.atomic`) cannot mix
two versions; a file that changes while it is read (rewritten in place, or replaced after a failed read)
is read again, and a read that a newer version has overtaken never writes the sidecar.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import os
import stat
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, TypeVar

from lowloss.errors import shortened
from lowloss.storage.atomic import ArtifactError, json_text, require_file, write_text_atomic

FORMAT = "lowloss-weights/3"
UNCHECKED_FORMAT = "lowloss-weights/2"
"""The metadata in the header without a checksum (files written before format 3): read, never written."""
LEGACY_FORMAT = "lowloss-weights/1"
HEADER_KEY = "lowloss"
"""The key of `__metadata__` that holds the metadata JSON."""
DTYPES = {"F32": ("float32", 4), "F64": ("float64", 8), "I64": ("int64", 8)}
"""The safetensors dtypes a weight file may hold: (torch name, bytes per element). Floating tensors are float32
or float64; int64 holds permutations (matchings, a flow's fixed permutations) and BatchNorm's batch count."""
FLOAT_DTYPES = tuple(name for name, _ in DTYPES.values() if name.startswith("float"))
"""The dtypes of weights: a model's floating tensors, in a lowloss file or a user's checkpoint."""
MAX_HEADER_BYTES = 100_000_000
"""safetensors' own limit on a header; a longer one is refused before it is read."""
MAX_DIMENSIONS = 8
READ_TRIES = 4
"""Reads of a file that keeps changing under the reader before it says so (waits 0.05, 0.1, 0.2 s)."""
SHA256 = {"type": "string", "pattern": "^[0-9a-f]{64}$"}
MODEL_KEYS = ("arch", "arch_options", "input_shape", "num_classes", "dataset")
"""What a trained model's metadata says (typed by the schema, required where a network is rebuilt): the
network and the data it fits."""
SCHEMA = {
    "type": "object",
    "required": ["format", "kind", "sha256", "tensors"],
    "properties": {
        "format": {"enum": [FORMAT, UNCHECKED_FORMAT, LEGACY_FORMAT]},
        "checksum": SHA256,
        "sha256": SHA256,
        "kind": {"type": "string", "minLength": 1, "maxLength": 64},
        "lowloss_version": {"type": "string"},
        "tensors": {
            "type": "object",
            "additionalProperties": {
                "type": "object",
                "required": ["shape"],
                "properties": {
                    "shape": {
                        "type": "array",
                        "maxItems": MAX_DIMENSIONS,
                        "items": {"type": "integer", "minimum": 0},
                    },
                    "dtype": {"enum": [name for name, _ in DTYPES.values()]},
                },
            },
        },
        "identity": {"type": "string", "minLength": 1},
        "output": {"type": "string", "minLength": 1},
        "arch": {"type": "string", "minLength": 1},
        "arch_options": {"type": "object"},
        "input_shape": {
            "type": "array",
            "minItems": 1,
            "maxItems": 3,
            "items": {"type": "integer", "minimum": 1, "maximum": 65536},
        },
        "num_classes": {"type": "integer", "minimum": 1, "maximum": 1_000_000},
        "dataset": {"type": "string", "minLength": 1},
        "freeze": {"type": "array", "items": {"type": "string", "minLength": 1}},
        "seed": {"type": ["integer", "null"]},
        "epochs": {"type": "integer", "minimum": 0},
        "history": {"type": "array", "items": {"type": "object"}},
    },
    "patternProperties": {
        "_acc$": {"type": "number", "minimum": 0, "maximum": 1},
        "_loss$": {"type": "number", "minimum": 0},
        "_sha256$": SHA256,
    },
    "allOf": [
        {"if": {"properties": {"kind": {"const": "checkpoint"}}}, "then": {"required": ["identity"]}},
        {"if": {"properties": {"format": {"const": FORMAT}}}, "then": {"required": ["checksum"]}},
        {"if": {"properties": {"format": {"const": UNCHECKED_FORMAT}}}, "then": {"not": {"required": ["checksum"]}}},
    ],
}
"""What lowloss reads of a weight file's metadata: types, ranges and the keys every file must have (numbers are
finite: NaN and Infinity are refused by the parser). Other keys are free, so newer files stay readable."""

logger = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class Header:
    """The checked header of a weight file: its metadata, its tensors' (dtype, shape, byte range) in the file,
    where the data starts, and whether the metadata came from a sidecar (`lowloss-weights/1`)."""

    path: Path
    meta: dict
    tensors: dict[str, tuple[str, tuple[int, ...], tuple[int, int]]]
    data_start: int
    legacy: bool = False


def sidecar_path(path: str | os.PathLike) -> Path:
    """`x.safetensors` -> `x.json` (the sidecar lives next to the weights)."""
    return Path(path).with_suffix(".json")


def parse_json(text: str | bytes, what: str):
    """JSON with NaN and Infinity refused (they are not JSON, and no lowloss number may be one)."""

    def refuse(constant: str):
        raise ValueError(f"{constant} is not a finite number")

    try:
        return json.loads(text, parse_constant=refuse)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise ArtifactError(f"{what} is not valid JSON ({exc})") from None


def canonical_json(meta: dict) -> str:
    """The one text of a metadata dict: keys sorted, no spaces, NaN and Infinity refused."""
    try:
        return json.dumps(meta, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except ValueError:
        raise ArtifactError(f"metadata value {_non_finite(meta)} is not a finite number") from None


def meta_checksum(meta: dict) -> str:
    """SHA-256 of the metadata without its `checksum` (which it then carries)."""
    body = {key: value for key, value in meta.items() if key != "checksum"}
    return hashlib.sha256(canonical_json(body).encode()).hexdigest()


def check_meta(path: Path, meta: object) -> dict:
    """Stop with one line naming the key unless `meta` is lowloss metadata by the schema and its checksum."""
    if not isinstance(meta, dict):
        raise ArtifactError(f"{path}: metadata is not a JSON object")
    error = schema_error(_validator(), meta)
    if error is not None:
        raise ArtifactError(f"{path}: metadata {error}")
    if meta["format"] == FORMAT and meta_checksum(meta) != meta["checksum"]:
        raise ArtifactError(f"{path}: metadata does not match its checksum (corrupt or altered)")
    return meta


def schema_error(validator, instance: object, limit: int = 160) -> str | None:
    """`key K: what is wrong` for the most telling error of `instance` against a jsonschema validator, or None."""
    from jsonschema.exceptions import best_match

    error = best_match(validator.iter_errors(instance))
    if error is None:
        return None
    key = ".".join(map(str, error.absolute_path)) or "(top level)"
    return f"key {key}: {shortened(error.message, limit)}"


@functools.cache
def _validator():
    """The schema's validator, made once (jsonschema is imported when the first header is checked, so that a
    command refused for a name or a missing file does not wait for it)."""
    import jsonschema

    return jsonschema.Draft202012Validator(SCHEMA)


def read_header(path: Path, handle: BinaryIO, size: int) -> Header:
    """Parse and check the header of the open weight file `handle` of `size` bytes; reads the header only."""
    prefix = handle.read(8)
    if len(prefix) < 8:
        raise ArtifactError(f"{path}: not a readable safetensors file (shorter than its 8-byte header length)")
    (length,) = struct.unpack("<Q", prefix)
    if length > min(size - 8, MAX_HEADER_BYTES):
        raise ArtifactError(f"{path}: not a readable safetensors file (header of {length} bytes in {size})")
    table = parse_json(handle.read(length), f"{path}: header")
    if not isinstance(table, dict):
        raise ArtifactError(f"{path}: not a readable safetensors file (header is not a JSON object)")
    extra = table.pop("__metadata__", None) or {}
    tensors = _tensor_table(path, table, size - 8 - length)
    if not isinstance(extra, dict) or HEADER_KEY not in extra:
        meta = _legacy_meta(path)
        legacy = True
    else:
        if not isinstance(extra[HEADER_KEY], str):
            raise ArtifactError(f"{path}: header metadata is not lowloss's")
        meta = parse_json(extra[HEADER_KEY], f"{path}: metadata in the header")
        legacy = False
    check_meta(path, meta)
    if (meta["format"] == LEGACY_FORMAT) != legacy:
        raise ArtifactError(f"{path}: format {meta['format']!r} does not fit where its metadata is stored")
    _check_tensor_table(path, meta, tensors)
    return Header(path, meta, tensors, 8 + length, legacy)


def _tensor_table(path: Path, table: dict, data_bytes: int) -> dict:
    """{name: (dtype, shape, (begin, end))}, each entry checked against the data's length, tiling it exactly."""
    tensors, spans = {}, []
    for name, entry in table.items():
        try:
            dtype, shape, (begin, end) = entry["dtype"], entry["shape"], entry["data_offsets"]
            ok = (
                isinstance(dtype, str)
                and isinstance(shape, list)
                and len(shape) <= MAX_DIMENSIONS
                and all(type(n) is int and n >= 0 for n in shape)
                and all(type(n) is int for n in (begin, end))
            )
        except (KeyError, TypeError, ValueError):
            ok = False
        if not ok:
            raise ArtifactError(f"{path}: not a readable safetensors file (bad entry for tensor {name!r})")
        if dtype not in DTYPES:
            allowed = ", ".join(name for name, _ in DTYPES.values())
            raise ArtifactError(f"{path}: tensor {name!r} has dtype {dtype}; weight files hold {allowed}")
        count = 1
        for n in shape:
            count *= n
        if not 0 <= begin <= end <= data_bytes or end - begin != count * DTYPES[dtype][1]:
            raise ArtifactError(f"{path}: not a readable safetensors file (tensor {name!r} does not fit its bytes)")
        tensors[name] = (DTYPES[dtype][0], tuple(shape), (begin, end))
        spans.append((begin, end))
    covered = 0
    for begin, end in sorted(spans):
        if begin != covered:
            break
        covered = end
    if covered != data_bytes:
        raise ArtifactError(f"{path}: not a readable safetensors file (tensors do not tile its {data_bytes} bytes)")
    return tensors


def _check_tensor_table(path: Path, meta: dict, tensors: dict) -> None:
    """The metadata's `tensors` must be the file's: names, shapes and (from format 2) dtypes."""
    expected = meta["tensors"]
    if set(expected) != set(tensors):
        raise ArtifactError(f"{path}: tensors {sorted(tensors)} do not match the metadata's {sorted(expected)}")
    for name, (dtype, shape, _) in tensors.items():
        if list(shape) != expected[name]["shape"] or expected[name].get("dtype", dtype) != dtype:
            raise ArtifactError(
                f"{path}: tensor {name!r} is {dtype} {list(shape)}, the metadata says "
                f"{expected[name].get('dtype', dtype)} {expected[name]['shape']}"
            )


def _legacy_meta(path: Path) -> dict:
    """The sidecar of a `lowloss-weights/1` file (plain safetensors; the sidecar held everything)."""
    side = sidecar_path(path)
    if not side.is_file():
        raise ArtifactError(f"{path}: no lowloss metadata in its header and sidecar {side.name} is missing")
    try:
        text = side.read_bytes()
    except OSError as exc:
        raise ArtifactError(f"{side}: cannot be read ({exc.strerror})") from None
    meta = parse_json(text, f"{side}: sidecar")
    if not isinstance(meta, dict) or meta.get("format") != LEGACY_FORMAT:
        raise ArtifactError(
            f"{path}: no lowloss metadata in its header, and sidecar {side.name} is not of format {LEGACY_FORMAT!r}"
        )
    return meta


def read_consistent(path: str | os.PathLike, read: Callable[[Path, BinaryIO, int], T]) -> tuple[T, bool]:
    """`read(path, handle, size)` on one open regular file, and whether the path still names that file.

    A failed read of a file that changed meanwhile (rewritten in place, or replaced by a newer version), and
    any read of a file rewritten in place, is tried again; a successful read of a file since replaced is
    whole (the rename left the open file as it was) but stale, which the caller learns.
    """
    path = Path(path)
    for attempt in range(READ_TRIES):
        try:
            with open(path, "rb") as handle:
                before = os.fstat(handle.fileno())
                if not stat.S_ISREG(before.st_mode):
                    raise ArtifactError(f"{path}: not a regular file")
                try:
                    result, error = read(path, handle, before.st_size), None
                except ArtifactError as exc:
                    result, error = None, exc
                rewritten = file_version(os.fstat(handle.fileno())) != file_version(before)
        except OSError as exc:  # missing, a folder, a link loop, no permission: named as `require_file` names them
            require_file(path)
            raise ArtifactError(f"{path}: cannot be read ({exc.strerror})") from None
        current = current_version(path) == file_version(before)
        if not rewritten and (error is None or current):
            if error is not None:
                raise error
            return result, current
        if attempt + 1 < READ_TRIES:
            time.sleep(0.05 * 2**attempt)
    raise ArtifactError(f"{path}: changed while being read, {READ_TRIES} times (is another process writing it?)")


def file_version(info: os.stat_result) -> tuple[int, ...]:
    """What tells two versions of a file apart: its inode, size and modification time."""
    return info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns


def current_version(path: Path) -> tuple[int, ...] | None:
    try:
        return file_version(os.stat(path))
    except OSError:
        return None


def read_meta(path: str | os.PathLike) -> dict:
    """The metadata of weight file `path`, from its header (checked), without reading the tensors.

    Rewrites the sidecar when it is missing or differs (a failure to do so only warns), unless a newer
    version of the file replaced the one read. A file of format 1 is read from its sidecar.
    """
    path = Path(path)
    header, current = read_consistent(path, read_header)
    if current and not header.legacy:
        refresh_sidecar(path, header.meta)
    return header.meta


def refresh_sidecar(path: Path, meta: dict) -> None:
    """Make the sidecar the copy of `meta`, the header of the current `path`. Should a writer replace `path`
    between the check and the write, the sidecar is made again from the newer header."""
    side, text = sidecar_path(path), json_text(meta)
    for _ in range(READ_TRIES):
        version = current_version(path)
        try:
            current = side.read_text()
        except (OSError, UnicodeDecodeError):
            current = None
        if current == text:
            return
        try:
            write_text_atomic(side, text)
        except ArtifactError as exc:
            logger.warning("%s: sidecar %s is out of date and cannot be rewritten (%s)", path, side.name, exc)
            return
        if current_version(path) == version:
            logger.warning(
                "%s: sidecar %s was %s; rewritten from the file's header",
                path,
                side.name,
                "missing" if current is None else "stale",
            )
            return
        try:  # replaced meanwhile: its writer may have written its sidecar before this one
            header, fresh = read_consistent(path, read_header)
        except ArtifactError:
            return
        if not fresh or header.legacy:
            return
        meta, text = header.meta, json_text(header.meta)


def _non_finite(value, key: str = "") -> str:
    """The key path of the first NaN or infinite number in `value` (for the message)."""
    if isinstance(value, float) and not math.isfinite(value):
        return repr(key or "(value)")
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for name, item in items:
        found = _non_finite(item, f"{key}.{name}" if key else str(name))
        if found:
            return found
    return ""
