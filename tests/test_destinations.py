"""Outputs never destroy anything but themselves (issue: nothing lost): a neighbour that looks like a checkpoint,
another artifact's sidecar, an input, a device, a FIFO, a folder or a symbolic link given as an output are
refused in one line, before any data is loaded, and every file that was there is byte-identical afterwards."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
import torch

from lowloss.storage.atomic import ArtifactError, write_text_atomic
from lowloss.storage.checkpoints import checkpoint_path, resumable_checkpoint
from lowloss.storage.file_kinds import CHECKPOINT
from lowloss.storage.weights import read_meta, save_weights, sidecar_path
from tests.conftest import assert_one_line_error, copy_model, hashes, run_main

WIDTH = 16


@pytest.fixture
def folder(digits_endpoints, tmp_path) -> Path:
    """seed0, seed1 (trained models with sidecars) and a model set of them, in one folder."""
    for seed in (0, 1):
        copy_model(digits_endpoints(WIDTH, seed, 2), tmp_path / f"seed{seed}.safetensors")
    return tmp_path


def refused(capsys, folder: Path, *args, fragment: str) -> None:
    """The command is refused in one line holding `fragment`, and nothing under `folder` changed."""
    before = hashes(folder)
    assert_one_line_error(run_main(capsys, *args), fragment)
    assert hashes(folder) == before


def test_a_neighbour_that_looks_like_a_checkpoint_is_never_deleted(folder, capsys, no_data):
    """`train --out best.ckpt.safetensors` then `train --out best.safetensors`: the first is a model, not the
    second's checkpoint."""
    copy_model(folder / "seed0.safetensors", folder / "best.ckpt.safetensors")
    out = folder / "best.safetensors"
    refused(
        capsys,
        folder,
        "train", "--width", str(WIDTH), "--seed", "5", "--out", out,
        fragment=f"--out {folder / 'best.ckpt.safetensors'}: its checkpoint best.ckpt.safetensors is a trained model",
    )  # fmt: skip
    copy_model(folder / "seed0.safetensors", folder / "curve2.ckpt.safetensors")
    out = folder / "curve2.safetensors"
    refused(
        capsys,
        folder,
        "fit-curve", folder / "seed0.safetensors", folder / "seed1.safetensors", "--out", out,
        fragment="its checkpoint curve2.ckpt.safetensors is a trained model (from `lowloss train`); this command "
        "writes a training checkpoint",
    )  # fmt: skip


def test_a_checkpoint_of_another_configuration_is_set_aside_with_a_line_that_says_where(folder, caplog):
    out = folder / "m.safetensors"
    checkpoint = checkpoint_path(out)
    save_weights(checkpoint, read_and_keep(folder / "seed0.safetensors"), {"kind": CHECKPOINT, "identity": "other"})
    before = checkpoint.read_bytes(), sidecar_path(checkpoint).read_bytes()
    with caplog.at_level(logging.WARNING):
        assert resumable_checkpoint(checkpoint, "this run") is None
    aside = folder / "m.ckpt.other.safetensors"
    assert (aside.read_bytes(), sidecar_path(aside).read_bytes()) == before and not checkpoint.exists()
    assert "checkpoint of another configuration; set aside as m.ckpt.other.safetensors, starting afresh" in caplog.text
    save_weights(checkpoint, read_and_keep(folder / "seed1.safetensors"), {"kind": CHECKPOINT, "identity": "other"})
    assert resumable_checkpoint(checkpoint, "this run") is None
    assert aside.read_bytes() == before[0] and (folder / "m.ckpt.other-2.safetensors").exists()  # never replaced


def read_and_keep(path: Path) -> dict:
    from lowloss.storage.weights import load_weights

    return load_weights(path).tensors


def test_a_checkpoint_that_vanishes_while_it_is_read_means_a_fresh_start(folder, monkeypatch):
    """A second identical `train` finds the checkpoint just as the first removes it."""
    checkpoint = folder / "m.ckpt.safetensors"
    save_weights(checkpoint, read_and_keep(folder / "seed0.safetensors"), {"kind": CHECKPOINT, "identity": "run"})
    import lowloss.storage.checkpoints as checkpoints

    real = checkpoints.load_weights

    def finished_meanwhile(path):
        checkpoint.unlink()  # the first run finishes and discards its checkpoint
        sidecar_path(checkpoint).unlink()
        return real(path)

    monkeypatch.setattr(checkpoints, "load_weights", finished_meanwhile)
    assert resumable_checkpoint(checkpoint, "run") is None
    assert sorted(p.name for p in folder.iterdir()) == [
        "seed0.json",
        "seed0.safetensors",
        "seed1.json",
        "seed1.safetensors",
    ]


@pytest.mark.parametrize(
    "command,out,fragment",
    [
        (["train", "--width", "8"], "model.json", "a weight file's name ends in .safetensors"),
        (["connect", "seed0.safetensors", "seed1.safetensors", "--method", "linear"], "seed1.json",
         "is the sidecar of input"),
        (["model-set", "seed0.safetensors", "seed1.safetensors"], "seed0.json", "is the sidecar of input"),
        (["connect", "seed0.safetensors", "seed0.safetensors", "--method", "linear"], "seed3.json",
         "is the JSON sidecar of seed3.safetensors; this command writes a path table"),
        (["model-set", "seed0.safetensors", "seed1.safetensors"], "seed3.json", "is the JSON sidecar of seed3"),
    ],
)  # fmt: skip
def test_an_output_that_is_another_artifacts_sidecar_is_refused(folder, capsys, no_data, command, out, fragment):
    copy_model(folder / "seed0.safetensors", folder / "seed3.safetensors")
    os.chdir(folder)
    refused(capsys, folder, *command, "--out", out, fragment=fragment)


@pytest.mark.parametrize(
    "command",
    [
        ["connect", "A", "B", "--method", "linear"],
        ["match", "A", "B"],
        ["fit-curve", "A", "B"],
        ["ensemble", "A", "B", "--independent"],
        ["ensemble", "A", "B", "--wa-layer", "1"],
        ["model-set", "A", "B"],
        ["import", "B", "--model", "tests.user_models:TinyCNN"],
    ],
)
@pytest.mark.parametrize("alias", ["same name", "symbolic link", "hard link", "sidecar"])
def test_an_output_that_is_an_input_or_aliases_one_is_refused(folder, capsys, no_data, command, alias):
    a, b = folder / "seed0.safetensors", folder / "seed1.safetensors"
    out = {"same name": b, "symbolic link": folder / "link.safetensors", "hard link": folder / "hard.safetensors"}
    out["sidecar"] = sidecar_path(a)
    out = out[alias]
    if alias == "symbolic link":
        out.symlink_to(b.name)
    elif alias == "hard link":
        os.link(b, out)
    args = [{"A": a, "B": b}.get(arg, arg) for arg in command]
    weights = command[0] not in ("connect", "model-set")
    if alias == "sidecar" and weights:
        fragment = "a weight file's name ends in .safetensors"
    elif alias == "symbolic link":
        fragment = f"is a symbolic link (to {b.name}), not a regular file"
    else:
        fragment = f"is the sidecar of input {a}" if alias == "sidecar" else f"is input {b}"
    refused(capsys, folder, *args, "--out", out, fragment=f"--out {out}: {fragment}")


def test_import_never_replaces_its_checkpoint_or_a_file_of_the_users(tmp_path, capsys, no_data):
    """The user's checkpoints (a safetensors state dict, a .pt) are inputs like any other."""
    from safetensors.torch import save_file

    state, pickled = tmp_path / "state.safetensors", tmp_path / "model.pt"
    save_file({"w": torch.ones(2)}, str(state))
    torch.save({"w": torch.ones(2)}, pickled)
    (tmp_path / "notes.json").write_text('{"mine": true}\n')
    model = ["--model", "tests.user_models:TinyCNN"]
    refused(capsys, tmp_path, "import", state, *model, "--out", state, fragment=f"--out {state}: is input {state}")
    refused(capsys, tmp_path, "import", pickled, *model, "--out", pickled, fragment="name ends in .safetensors")
    notes = tmp_path / "notes.safetensors"
    refused(capsys, tmp_path, "import", pickled, *model, "--out", notes, fragment="which is no lowloss sidecar")


NOT_REGULAR = {
    "device": "is a character device",
    "fifo": "is a FIFO",
    "folder": "is a folder",
    "dangling link": "is a symbolic link",
    "empty": "argument --out: '' names no file",
}


@pytest.mark.parametrize("kind", list(NOT_REGULAR))
@pytest.mark.parametrize("command", ["connect", "model-set", "train"])
def test_an_output_that_is_not_a_regular_file_is_refused(folder, capsys, no_data, kind, command):
    out = {"device": Path("/dev/null"), "empty": ""}.get(kind, folder / "out.safetensors")
    if kind == "fifo":
        os.mkfifo(out)
    elif kind == "folder":
        out.mkdir()
    elif kind == "dangling link":
        out.symlink_to("nowhere")
    a, b = folder / "seed0.safetensors", folder / "seed1.safetensors"
    args = {
        "connect": ["connect", a, b, "--method", "linear"],
        "model-set": ["model-set", a, b],
        "train": ["train", "--width", "8"],
    }[command]
    fragment = NOT_REGULAR[kind]
    if command == "train" and kind == "device":  # a weight file is named *.safetensors first
        fragment = "a weight file's name ends in .safetensors"
    refused(capsys, folder, *args, "--out", out, fragment=fragment)
    if kind == "fifo":
        assert Path(out).is_fifo()


@pytest.mark.parametrize("kind", ["file", "fifo", "dangling link", "empty"])
def test_a_report_folder_that_is_not_a_folder_is_refused(folder, capsys, no_data, kind):
    table = folder / "x" / "paths" / "linear" / "0-1.csv"
    table.parent.mkdir(parents=True)
    table.write_text("method\n")
    out = "" if kind == "empty" else folder / "out"
    if kind == "file":
        out.write_text("mine\n")
    elif kind == "fifo":
        os.mkfifo(out)
    elif kind == "dangling link":
        out.symlink_to("nowhere")
    fragment = {
        "file": "is a regular file, not a folder",
        "fifo": "is a FIFO, not a folder",
        "dangling link": "is a symbolic link, not a folder",
        "empty": "argument --out-dir: '' names no file",
    }[kind]
    refused(capsys, folder, "report", table, "--out-dir", out, fragment=fragment)


@pytest.mark.parametrize("kind", ["fifo", "dangling link", "link to a file"])
def test_the_atomic_writer_never_replaces_what_is_not_a_regular_file(tmp_path, kind):
    target = tmp_path / "out.csv"
    if kind == "fifo":
        os.mkfifo(target)
    elif kind == "dangling link":
        target.symlink_to("nowhere")
    else:
        (tmp_path / "real.csv").write_text("kept\n")
        target.symlink_to("real.csv")
    before = hashes(tmp_path)
    with pytest.raises(ArtifactError, match="not a regular file; it is never replaced"):
        write_text_atomic(target, "new\n")
    assert hashes(tmp_path) == before


def test_derived_names_never_replace_a_file_the_command_did_not_make(folder, capsys, no_data):
    """A weight file's sidecar name that holds the user's own JSON, or a model set, is left alone."""
    (folder / "notes.json").write_text('{"mine": true}\n')
    refused(
        capsys, folder, "train", "--width", "8", "--out", folder / "notes.safetensors",
        fragment=f"its sidecar would replace {folder / 'notes.json'}, which is no lowloss sidecar",
    )  # fmt: skip
    assert run_main(capsys, "model-set", folder / "seed0.safetensors", folder / "seed1.safetensors",
                    "--out", folder / "V.json").returncode == 0  # fmt: skip
    refused(
        capsys, folder, "train", "--width", "8", "--out", folder / "V.safetensors",
        fragment="its sidecar V.json is a model set manifest",
    )  # fmt: skip


def test_a_rerun_may_replace_its_own_output_and_sidecar(folder, capsys):
    """The checks refuse only what is not the command's own: the same `model-set` run twice is fine."""
    args = ("model-set", folder / "seed0.safetensors", folder / "seed1.safetensors", "--out", folder / "V.json")
    assert run_main(capsys, *args).returncode == 0
    first = (folder / "V.json").read_bytes()
    assert run_main(capsys, *args).returncode == 0
    assert (folder / "V.json").read_bytes() == first
    assert read_meta(folder / "seed0.safetensors")["kind"] == "model"


def test_two_identical_trains_at_once_both_succeed_with_the_same_model(tmp_path):
    """Each may find, resume, replace or discard the other's checkpoint; neither fails, and the model is the
    one a single run makes."""
    import subprocess
    import sys

    args = ["-m", "lowloss", "train", "--width", "8", "--epochs", "6", "--no-progress"]
    out = tmp_path / "m.safetensors"
    runs = [subprocess.Popen([sys.executable, *args, "--out", str(out)], stderr=subprocess.PIPE) for _ in range(2)]
    errors = [run.communicate(timeout=300)[1].decode() for run in runs]
    assert [run.returncode for run in runs] == [0, 0], errors
    alone = tmp_path / "alone.safetensors"
    subprocess.run([sys.executable, *args, "--out", str(alone)], check=True, capture_output=True)
    from safetensors.torch import load_file

    assert all(torch.equal(v, load_file(alone)[k]) for k, v in load_file(out).items())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["alone.json", "alone.safetensors", "m.json", "m.safetensors"]
