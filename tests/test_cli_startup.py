"""The command line answers at once: `--help` never imports torch, and the names it shows come from the
torch-free tables of architectures and datasets."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from lowloss.cli.main import COMMANDS
from lowloss.errors import did_you_mean
from lowloss.nets.architectures import ARCHITECTURES
from lowloss.training.datasets import DATASETS
from tests.conftest import assert_one_line_error, copy_model, run_cli, run_main

NO_TORCH = """
import sys, time
from lowloss.cli.main import main
started = time.perf_counter()
try:
    main({argv!r})
except SystemExit:
    pass
print("SECONDS", time.perf_counter() - started)
heavy = sorted(name for name in ("torch", "torchvision", "mlflow", "sklearn", "pandas") if name in sys.modules)
print("HEAVY", ",".join(heavy))
"""


@pytest.mark.parametrize(
    "argv", [["--help"], *([command.NAME, "--help"] for command in COMMANDS)], ids=lambda argv: " ".join(argv)
)
def test_help_imports_no_torch_and_answers_at_once(argv):
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-c", NO_TORCH.format(argv=argv)], capture_output=True, text=True, timeout=60
    )
    wall = time.perf_counter() - started
    assert result.returncode == 0, result.stderr
    assert "usage: lowloss" in result.stdout
    lines = dict(line.split(" ", 1) if " " in line else (line, "") for line in result.stdout.splitlines()[-2:])
    assert lines["HEAVY"] == ""  # not torch, nor the other heavy libraries
    assert float(lines["SECONDS"]) < 0.5, lines  # building the parsers and printing help
    assert wall < 5, wall  # the interpreter's own start included, on a loaded machine


def test_help_lists_the_dataset_and_architecture_choices():
    text = run_cli("train", "--help").stdout
    for name in (*DATASETS, *ARCHITECTURES):
        assert name in text


def test_a_misspelt_name_gets_the_closest_one():
    assert did_you_mean("ot-wa", ["linear", "ot", "ot+wa"]) == " (did you mean `ot+wa`?)"
    assert did_you_mean("resnet", ["onehidden", "fc3"]) == ""


@pytest.mark.parametrize(
    "args,fragment",
    [
        (["--dataset", "digit"], "unknown dataset 'digit' (did you mean `digits`?); known: digits, mnist"),
        (["--arch", "vgg"], "unknown architecture 'vgg' (did you mean `vgg16`?)"),
    ],
)
def test_an_unknown_dataset_or_architecture_suggests_the_closest(tmp_path, args, fragment):
    assert_one_line_error(run_cli("train", "--out", tmp_path / "x.safetensors", *args), fragment)


def test_success_says_what_was_done_on_stderr_and_keeps_the_json_line_last(tmp_path):
    out = tmp_path / "m.safetensors"
    result = run_cli("train", "--width", "8", "--epochs", "1", "--out", out, "--no-progress", check=True)
    summary = json.loads(result.stdout.splitlines()[-1])
    assert "loading torch and dataset digits" in result.stderr  # said while it loads
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("lowloss train: done in ") and f"wrote {out}" in last
    assert f"test acc {100 * summary['test_acc']:.2f} %" in last


def test_a_file_of_the_wrong_kind_is_named(digits_endpoints, tmp_path, capsys):
    model = copy_model(digits_endpoints(16, 0, 1), tmp_path / "seed0.safetensors")
    other = copy_model(digits_endpoints(16, 1, 1), tmp_path / "seed1.safetensors")
    matching, table, model_set = tmp_path / "m.safetensors", tmp_path / "0-1.csv", tmp_path / "V.json"
    for args in (
        ["match", model, other, "--out", matching],
        ["connect", model, other, "--method", "linear", "--points", "2", "--out", table, "--no-progress"],
        ["model-set", model, other, "--out", model_set],
    ):
        assert run_main(capsys, *args).returncode == 0
    cases = [
        (matching, "this is an OT matching (from `lowloss match`)"),
        (table, "this is a path table (from `lowloss connect`)"),
        (model_set, "this is a model set manifest (from `lowloss model-set`)"),
        (model.with_suffix(".json"), "this is the JSON sidecar of seed0.safetensors"),
    ]
    for wrong, fragment in cases:
        result = run_main(capsys, "connect", wrong, other, "--method", "linear", "--out", tmp_path / "p.csv")
        assert_one_line_error(result, f"{wrong}: {fragment}, but a trained model (from `lowloss train`) is expected")


REFUSED = """
import sys, time
from lowloss.cli.main import main
started = time.perf_counter()
code = main({argv!r})
print("SECONDS", time.perf_counter() - started)
print("CODE", code)
heavy = sorted(name for name in ("torch", "torchvision", "mlflow", "sklearn", "pandas") if name in sys.modules)
print("HEAVY", ",".join(heavy))
"""


@pytest.mark.parametrize(
    "case,fragment",
    [
        ("unknown method", "argument --method: unknown method 'lineer' (did you mean `linear`?)"),
        ("missing file", "missing.safetensors: file not found"),
        ("bad option value", "argument --epochs: must be at least 1, got 0"),
        ("option the method does not read", "--wa-breakpoints applies to linear+wa, arc+wa, ot+wa"),
        ("file of the wrong kind", "this is the JSON sidecar of a.safetensors, but a trained model"),
        ("output that is an input", "--out {a}: is input {a}"),
        ("bad header", "metadata does not match its checksum"),
    ],
)
def test_data_free_errors_are_refused_before_any_heavy_import(case, fragment, digits_endpoints, tmp_path):
    """Names, files and option values are checked before torch (or pandas, or MLflow) is imported: each such
    mistake is refused in well under a second of the command's own time."""
    a, b = (
        copy_model(digits_endpoints(16, seed, 1), tmp_path / f"{name}.safetensors") for seed, name in enumerate("ab")
    )
    connect = ["connect", str(a), str(b), "--method", "linear", "--out", str(tmp_path / "p.csv")]
    argv = {
        "unknown method": [*connect[:4], "lineer", *connect[5:]],
        "missing file": ["connect", str(tmp_path / "missing.safetensors"), *connect[2:]],
        "bad option value": ["train", "--epochs", "0", "--out", str(tmp_path / "m.safetensors")],
        "option the method does not read": [*connect, "--wa-breakpoints", "3"],
        "file of the wrong kind": ["connect", str(a.with_suffix(".json")), *connect[2:]],
        "output that is an input": [*connect[:-1], str(a)],
        "bad header": connect,
    }[case]
    if case == "bad header":
        data = bytearray(a.read_bytes())
        data[data.index(b'seed\\":') + 7] ^= 1  # the seed's first digit: still JSON, another value
        a.write_bytes(bytes(data))
    result = subprocess.run(
        [sys.executable, "-c", REFUSED.format(argv=argv)], capture_output=True, text=True, timeout=60
    )
    lines = dict(line.split(" ", 1) if " " in line else (line, "") for line in result.stdout.splitlines()[-3:])
    assert lines["CODE"] == "2", result.stderr
    assert result.stderr.count("lowloss: error:") == 1 and fragment.format(a=a) in result.stderr, result.stderr
    assert lines["HEAVY"] == ""
    assert float(lines["SECONDS"]) < 0.5, lines
