"""Crash safety: every command, killed at any write, rename or fsync, or meeting a full disk, leaves
its outputs absent, old or new and whole, and a rerun ends with the bytes of an uninterrupted run."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lowloss.storage.model_set import write_model_set
from lowloss.storage.weights import load_weights
from lowloss.training.config import TrainConfig
from lowloss.training.train import train_endpoint
from tests.conftest import run_main

REPO = Path(__file__).resolve().parent.parent
WIDTH = ["--width", "8"]
QUIET = ["--no-progress"]
SCENARIOS = {
    "train": (
        ["train", *WIDTH, "--epochs", "1", "--seed", "5", "--out", "m.safetensors", *QUIET],
        ["train", *WIDTH, "--epochs", "2", "--seed", "1", "--out", "m.safetensors", *QUIET],
    ),
    "fit-curve": (
        ["fit-curve", "a.safetensors", "b.safetensors", "--epochs", "1", "--out", "c.safetensors", *QUIET],
        [
            "fit-curve",
            "a.safetensors",
            "b.safetensors",
            "--epochs",
            "1",
            "--seed",
            "1",
            "--out",
            "c.safetensors",
            *QUIET,
        ],
    ),
    "fit-connector": (
        None,
        [
            "fit-connector",
            "--kind",
            "realnvp-flow",
            "--model-set",
            "V.json",
            "--layers",
            "1",
            "--hidden",
            "8",
            "--steps",
            "3",
            "--batch-size",
            "8",
            "--out",
            "nu.safetensors",
            *QUIET,
        ],
    ),
    "match": (
        ["match", "a.safetensors", "c.safetensors", "--out", "mt.safetensors"],
        ["match", "a.safetensors", "b.safetensors", "--out", "mt.safetensors"],
    ),
    "connect": (
        ["connect", "a.safetensors", "c.safetensors", "--method", "linear", "--points", "2", "--out", "p.csv", *QUIET],
        ["connect", "a.safetensors", "b.safetensors", "--method", "linear", "--points", "3", "--out", "p.csv", *QUIET],
    ),
}
"""name: (command leaving an earlier version of the outputs, or None; the command under test)."""


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, digits) -> Path:
    """Three width-8 digits models (one epoch each) and their model set, the inputs of every scenario."""
    folder = tmp_path_factory.mktemp("fault-inputs")
    models = []
    for seed, name in enumerate("abc"):
        models.append(folder / f"{name}.safetensors")
        train_endpoint("onehidden", {"width": 8}, digits, TrainConfig(epochs=1, seed=seed), models[-1], progress=False)
    write_model_set(folder / "V.json", models)
    return folder


@pytest.fixture(scope="module")
def tmpfs(tmp_path_factory) -> tuple[Path | None, str]:
    """A 4 MiB tmpfs where this test may mount one, else None and the reason."""
    mount = tmp_path_factory.mktemp("tmpfs")
    if shutil.which("mount") is None:
        yield None, "no mount command to make a small tmpfs with"
        return
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], capture_output=True, text=True
    )
    if result.returncode != 0:
        yield None, f"cannot mount a tmpfs here (it needs root and CAP_SYS_ADMIN): {result.stderr.strip()}"
        return
    yield mount, ""
    subprocess.run(["umount", str(mount)], check=True)


@pytest.fixture(scope="module")
def report(inputs, tmpfs, tmp_path_factory) -> dict:
    """tests/faults.py on every scenario, in a fresh single-threaded interpreter (it forks): a kill at
    every call, a full disk at every write, and a filled tmpfs where one could be mounted."""
    mount, _ = tmpfs
    modes = ["kill", "enospc"] + (["tmpfs"] if mount else [])
    specs = [
        {
            "name": name,
            "inputs": str(inputs),
            "previous": previous,
            "args": args,
            "modes": modes,
            "tmpfs": str(mount) if mount else None,
        }
        for name, (previous, args) in SCENARIOS.items()
    ]
    spec_file = tmp_path_factory.mktemp("faults") / "spec.json"
    spec_file.write_text(json.dumps(specs))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    result = subprocess.run(
        [sys.executable, "-m", "tests.faults", str(spec_file)],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.splitlines()[-1])


def test_kill_or_full_disk_at_every_write_rename_and_fsync(report):
    assert set(report) == set(SCENARIOS)
    for name, outcome in report.items():
        assert outcome["kill"] == [] and outcome["enospc"] == [], (name, outcome["kill"][:3], outcome["enospc"][:3])
        calls = outcome["calls"]
        assert {"write", "replace", "fsync"} <= set(calls), (name, calls)
        # every call was a kill point once, every write a full disk once
        assert outcome["tries"]["kill"] == len(calls) and outcome["tries"]["enospc"] == calls.count("write"), name
    assert "m.safetensors" in report["train"]["outputs"] and report["connect"]["outputs"] == ["p.csv"]


def test_a_real_full_disk_at_every_page(report, tmpfs):
    mount, reason = tmpfs
    if mount is None:
        pytest.skip(reason)
    for name, outcome in report.items():
        assert outcome["tmpfs"] == [], (name, outcome["tmpfs"])
        assert outcome["tries"]["tmpfs"] >= 2, name  # at least one run found the disk full, and the last fit


def test_the_kill_of_the_issue_reruns_cleanly(tmp_path, capsys):
    """`strace -e inject` kills `lowloss train` at its 4th rename; the same command then succeeds."""
    strace = shutil.which("strace")
    if strace is None:
        pytest.skip("strace is not installed (apt-get install strace)")
    out = tmp_path / "x" / "m.safetensors"
    train = [sys.executable, "-m", "lowloss", "train", "--width", "32", "--epochs", "3", "--out", str(out), *QUIET]
    renames = "rename,renameat,renameat2"
    killed = subprocess.run(
        [
            strace,
            "-f",
            "-o",
            os.devnull,
            "-e",
            f"trace={renames}",
            "-e",
            f"inject={renames}:signal=KILL:when=4",
            *train,
        ],
        capture_output=True,
        text=True,
    )
    if killed.returncode != -9 and "ptrace" in killed.stderr:
        pytest.skip(f"strace cannot trace here: {killed.stderr.strip()}")
    assert killed.returncode in (-9, 137), killed.stderr
    assert not out.exists()
    rerun = run_main(capsys, *train[3:])
    assert rerun.returncode == 0, rerun.stderr
    assert load_weights(out).meta["epochs"] == 3
    assert sorted(p.name for p in out.parent.iterdir()) == ["m.json", "m.safetensors"]
