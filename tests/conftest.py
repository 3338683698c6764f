"""Shared fixtures: small trained digits endpoints (trained once per session) and CLI runner."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lowloss.artifacts import read_meta, sidecar_path
from lowloss.cli import main
from lowloss.data import load_dataset
from lowloss.train import TrainConfig, train_endpoint

torch.set_num_threads(2)
LOG_LEVELS = ("INFO ", "WARNING ")


def run_cli(*args: str, check: bool = False) -> subprocess.CompletedProcess:
    """Run `python -m lowloss ARGS` and capture its output."""
    result = subprocess.run([sys.executable, "-m", "lowloss", *map(str, args)], capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(f"lowloss {' '.join(map(str, args))} failed:\n{result.stderr}")
    return result


def run_main(capsys, *args) -> subprocess.CompletedProcess:
    """The CLI in this process (no interpreter start-up), captured like `run_cli`."""
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, captured.out, captured.err)


def copy_model(source: Path, target: Path) -> Path:
    """Copy a weight file and its sidecar; returns the copy's path."""
    shutil.copy(source, target)
    shutil.copy(sidecar_path(source), sidecar_path(target))
    return target


def copy_with_meta(source: Path, target: Path, **changes) -> Path:
    """A copy of a model file whose sidecar says something else (its hash still matches the tensors)."""
    copy_model(source, target)
    sidecar_path(target).write_text(json.dumps({**read_meta(source), **changes}))
    return target


def assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    """The CLI's error contract: exit 2, one stderr line starting `lowloss: error:`, no traceback.

    Progress lines logged before it (`INFO …: loading dataset …`) may precede it.
    """
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip() and not line.startswith(LOG_LEVELS)]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("lowloss: error:"), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture(scope="session")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="session")
def digits_endpoints(tmp_path_factory, digits) -> callable:
    """`get(width, seed, epochs=20)` -> path of a trained onehidden digits endpoint, trained once."""
    cache: dict[tuple[int, int, int], Path] = {}
    folder = tmp_path_factory.mktemp("endpoints")

    def get(width: int, seed: int, epochs: int = 20) -> Path:
        key = (width, seed, epochs)
        if key not in cache:
            out = folder / f"w{width}-s{seed}-e{epochs}.safetensors"
            train_endpoint("onehidden", {"width": width}, digits, TrainConfig(epochs=epochs, seed=seed), out,
                           progress=False)
            cache[key] = out
        return cache[key]

    return get
