"""Property tests (Hypothesis, issue: nothing lost): weight-file headers and path tables mutated at random are
either read correctly or refused in one `lowloss: error:` line naming the file; never a traceback, never a
wrong load, never a write to another file. Examples are few and derandomized (the `lowloss` profile of
conftest.py), so the suite stays quick and every run tries the same cases."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import struct
import subprocess
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import save

from lowloss.cli.main import main
from lowloss.storage.atomic import json_text
from lowloss.storage.header import HEADER_KEY, meta_checksum
from lowloss.storage.weights import load_weights, save_weights, sidecar_path
from tests.conftest import hashes
from tests.test_report import path_table

FIXTURES = settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**30), 10**30) | st.floats() | st.text(max_size=8),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3),
    max_leaves=6,
)
"""Any JSON value, and NaN and infinities besides (Python's json writes them; no lowloss file may hold one)."""


@pytest.fixture(scope="module")
def model_file(tmp_path_factory, digits_endpoints) -> tuple[bytes, dict]:
    """The bytes and metadata of a small trained model (onehidden of width 4)."""
    path = digits_endpoints(4, 0, 1)
    return path.read_bytes(), load_weights(path).meta


def header_of(data: bytes) -> tuple[int, dict]:
    (length,) = struct.unpack("<Q", data[:8])
    return length, json.loads(data[8 : 8 + length])


@st.composite
def mutated_files(draw, data: bytes, meta: dict) -> tuple[bytes, bool]:
    """(a mutation of the file `data`, whether it rewrote the metadata consistently, checksum included)."""
    length, _ = header_of(data)
    kind = draw(st.sampled_from(["bytes", "insert", "cut", "field", "drop", "forged field"]))
    if kind == "bytes":  # a few bytes of the header overwritten
        changed = bytearray(data)
        for _ in range(draw(st.integers(1, 4))):
            changed[draw(st.integers(0, 8 + length - 1))] = draw(st.integers(0, 255))
        return bytes(changed), False
    if kind == "insert":
        at = draw(st.integers(0, 8 + length))
        return data[:at] + draw(st.binary(min_size=1, max_size=16)) + data[at:], False
    if kind == "cut":
        start = draw(st.integers(0, len(data) - 1))
        return data[:start] + data[start + draw(st.integers(1, 64)) :], False
    changed = dict(meta)
    key = draw(st.sampled_from(sorted(meta) + ["shape", "arch_options.width"]))
    if kind == "drop":
        changed.pop(key, None)
    elif key == "arch_options.width":
        changed["arch_options"] = {"width": draw(JSON_VALUES | st.integers(0, 10**12))}
    else:
        changed[key] = draw(JSON_VALUES)
    forged = kind == "forged field"
    if forged:
        try:
            changed["checksum"] = meta_checksum(changed)
        except Exception:  # a NaN cannot be checksummed: written as it is
            forged = False
    tensors = load_weights_from(data)
    return save(tensors, metadata={HEADER_KEY: json.dumps(changed)}), forged


def load_weights_from(data: bytes) -> dict:
    from safetensors.torch import load

    return load(data)


def run_quietly(*args) -> subprocess.CompletedProcess:
    """The CLI in this process, its output captured (capsys does not reset between Hypothesis' examples)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(arg) for arg in args])
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


def assert_refused_naming(result: subprocess.CompletedProcess, path: Path) -> None:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert lines[0].startswith(f"lowloss: error: {path}"), lines[0]


@FIXTURES
@given(st.data())
def test_a_mutated_weight_file_is_read_correctly_or_refused_in_one_line(model_file, tmp_path_factory, data):
    original, meta = model_file
    folder = tmp_path_factory.mktemp("mutated")
    path = folder / "m.safetensors"
    save_weights(folder / "neighbour.safetensors", {"w": torch.ones(2)}, {"kind": "test"})
    mutation, forged = data.draw(mutated_files(original, meta))
    path.write_bytes(mutation)
    sidecar_path(path).write_text(json_text(meta))
    before = hashes(folder)
    result = run_quietly("info", "--json", path)
    after = hashes(folder)
    assert {name: after[name] for name in before if name != "m.json"} == {
        name: digest for name, digest in before.items() if name != "m.json"
    } and set(after) == set(before)  # nothing but the file's own sidecar may change
    if result.returncode != 0:
        assert_refused_naming(result, path)
        assert after == before  # nothing written on a refusal
        return
    loaded = json.loads(result.stdout)
    expected = load_weights_from(mutation if forged else original)
    assert all(torch.equal(load_weights(path).tensors[k], v) for k, v in expected.items())
    if not forged:  # the same meaning as before the mutation: exactly the original metadata
        assert loaded == meta
    assert json.loads(sidecar_path(path).read_text()) == loaded  # the sidecar: a copy of the header


def cells() -> st.SearchStrategy[str]:
    """What a cell of a path table may be turned into: numbers of every kind, text, nothing."""
    numbers = st.floats() | st.integers(-(10**40), 10**40) | st.sampled_from([0, 1, 0.5, -0.0, 2, 1e308])
    return numbers.map(str) | st.text(max_size=6) | st.sampled_from(["", "nan", "inf", "-inf", "train", "test", "x"])


@st.composite
def mutated_tables(draw, rows: list[list[str]]) -> list[list[str]]:
    """Rows of a path table (header first) with one mutation: a cell, a row dropped or repeated, a column gone."""
    rows = [list(row) for row in rows]
    kind = draw(st.sampled_from(["cell", "cell", "cell", "drop row", "repeat row", "drop column"]))
    if kind == "cell":
        rows[draw(st.integers(1, len(rows) - 1))][draw(st.integers(0, len(rows[0]) - 1))] = draw(cells())
    elif kind == "drop row":
        del rows[draw(st.integers(1, len(rows) - 1))]
    elif kind == "repeat row":
        row = draw(st.integers(1, len(rows) - 1))
        rows.insert(row, list(rows[row]))
    else:
        column = draw(st.integers(0, len(rows[0]) - 1))
        rows = [row[:column] + row[column + 1 :] for row in rows]
    return rows


@settings(FIXTURES, max_examples=20)  # a table that passes makes the report's figures: the slow half
@given(st.data())
def test_a_mutated_path_table_is_reported_correctly_or_refused_in_one_line(tmp_path_factory, data):
    root = tmp_path_factory.mktemp("tables") / "results" / "exp" / "paths" / "linear"
    root.mkdir(parents=True)
    good, bad = root / "0-1.csv", root / "2-3.csv"
    path_table("linear", ["linear"], 0.5, (0, 1), points=3).to_csv(good, index=False)
    original = list(
        csv.reader(path_table("linear", ["linear"], 0.7, (2, 3), points=3).to_csv(index=False).splitlines())
    )
    mutated = data.draw(mutated_tables(original))
    with open(bad, "w", newline="") as handle:
        csv.writer(handle).writerows(mutated)
    out = root.parent.parent.parent / "report"
    before = hashes(root)
    result = run_quietly("report", good, bad, "--out-dir", out)
    assert hashes(root) == before  # the inputs are never written
    if result.returncode != 0:
        assert_refused_naming(result, bad)
        assert not out.exists()
        return
    header, *body = mutated
    table = [dict(zip(header, row)) for row in body]
    accuracies = [float(row["acc"]) for row in table]
    assert all(0 <= acc <= 1 and math.isfinite(acc) for acc in accuracies)
    worst = {split: min(float(r["acc"]) for r in table if r["split"] == split) for split in ("train", "test")}
    with open(out / "worst_points.csv") as handle:
        reported = {r["split"]: float(r["worst_acc"]) for r in csv.DictReader(handle) if r["pair"] == "2-3"}
    assert reported == pytest.approx({split: 100 * acc for split, acc in worst.items()})
