"""The CLI contract other stages rely on: outputs, the sidecar's metrics and one-line errors."""

import json
import os
import platform

import pytest

from tests.conftest import assert_one_line_error, run_cli, run_main


def test_train_writes_weights_and_sidecar(tmp_path):
    out = tmp_path / "seed0.safetensors"
    result = run_cli(
        "train",
        "--dataset",
        "digits",
        "--arch",
        "onehidden",
        "--width",
        "32",
        "--seed",
        "0",
        "--epochs",
        "2",
        "--out",
        out,
        "--no-progress",
        check=True,
    )
    meta = json.loads(out.with_suffix(".json").read_text())
    assert 0 <= meta["test_acc"] <= 1 and 0 <= meta["train_acc"] <= 1
    assert json.loads(result.stdout.splitlines()[-1])["test_acc"] == meta["test_acc"]


@pytest.mark.parametrize(
    "args,fragment",
    [
        (["--dataset", "imagenet"], "unknown dataset 'imagenet'"),
        (["--arch", "resnet"], "unknown architecture 'resnet'"),
        (["--arch", "fc3", "--width", "10"], "--width does not apply to --arch fc3"),
        (["--epochs", "many"], "argument --epochs: expected an integer, got 'many'"),
        (["--dataset", "mnist", "--data-root", "/nonexistent"], "not found under /nonexistent"),
    ],
)
def test_train_errors_are_one_line(tmp_path, args, fragment):
    out = tmp_path / "x.safetensors"
    assert_one_line_error(run_cli("train", "--out", out, "--epochs", "1", *args), fragment)
    assert not out.exists()


def test_missing_subcommand_is_one_line():
    assert_one_line_error(run_cli(), "required")


@pytest.mark.parametrize(
    "command,option,value,fragment",
    [
        ("train", "--epochs", "0", "must be at least 1, got 0"),
        ("train", "--width", "0", "must be at least 1, got 0"),
        ("train", "--batch-size", "0", "must be at least 1, got 0"),
        ("train", "--widths", "64,0", "must be at least 1, got 0"),
        ("train", "--lr", "-0.1", "must be greater than 0"),
        ("train", "--lr", "nan", "must be a finite number"),
        ("train", "--weight-decay", "-1", "must be at least 0"),
        ("fit-curve", "--epochs", "-1", "must be at least 0, got -1"),
        ("fit-curve", "--batch-size", "-3", "must be at least 1, got -3"),
        ("fit-connector", "--steps", "0", "must be at least 1, got 0"),
        ("fit-connector", "--hidden", "0", "must be at least 1, got 0"),
        ("connect", "--points", "100000", "must be at most 1000, got 100000"),
        ("connect", "--points", "0", "must be at least 1, got 0"),
    ],
)
def test_numeric_options_are_checked_before_anything_runs(tmp_path, capsys, command, option, value, fragment):
    """Each command refuses a bad number while parsing, in one line naming the option; nothing is read or
    written (the model files named here do not even exist)."""
    positional = {
        "fit-curve": ["a.safetensors", "b.safetensors"],
        "connect": ["a.safetensors", "b.safetensors"],
        "fit-connector": ["--kind", "realnvp-flow", "--model-set", "V.json"],
    }.get(command, [])
    extra = ["--method", "linear"] if command == "connect" else []
    result = run_main(capsys, command, *positional, *extra, option, value, "--out", tmp_path / "x")
    assert_one_line_error(result, f"argument {option}: {fragment}")
    assert list(tmp_path.iterdir()) == []


def test_epochs_0_never_replaces_a_trained_model(digits_endpoints, tmp_path, capsys):
    out = tmp_path / "m.safetensors"
    out.write_bytes(digits_endpoints(32, 0, 2).read_bytes())
    before = out.read_bytes()
    result = run_main(capsys, "train", "--width", "32", "--epochs", "0", "--out", out)
    assert_one_line_error(result, "--epochs: must be at least 1")
    assert out.read_bytes() == before


def test_an_os_error_anywhere_is_one_line_naming_the_file(monkeypatch, tmp_path, capsys):
    import errno

    from lowloss.cli.commands import info

    def loop(args):
        raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), str(args.file))

    monkeypatch.setattr(info, "run", loop)
    result = run_main(capsys, "info", tmp_path / "x.safetensors")
    assert_one_line_error(result, f"lowloss: error: {tmp_path / 'x.safetensors'}: Too many levels of symbolic links")


def test_every_command_keeps_large_freed_blocks_in_the_heap(monkeypatch, capsys):
    """A command runs with glibc's mmap threshold raised and its heap untrimmed (`lowloss.cli.allocator`): asked for
    once, after the command's checks, and taken by glibc where the process runs on it."""
    from lowloss.cli import allocator
    from lowloss.cli import main as cli_main

    asked = []
    monkeypatch.setattr(cli_main, "keep_large_blocks", lambda: asked.append(True))
    assert run_main(capsys, "methods").returncode == 0
    assert asked == [True]
    assert run_main(capsys, "connect", "missing-a.safetensors", "missing-b.safetensors").returncode == 2
    assert asked == [True]  # refused by its checks first
    on_glibc = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"
    assert allocator.keep_large_blocks() is on_glibc
