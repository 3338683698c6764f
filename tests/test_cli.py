"""The CLI contract other stages rely on: outputs, the sidecar's metrics and one-line errors."""

import json

import pytest

from tests.conftest import assert_one_line_error, run_cli


def test_train_writes_weights_and_sidecar(tmp_path):
    out = tmp_path / "seed0.safetensors"
    result = run_cli("train", "--dataset", "digits", "--arch", "onehidden", "--width", "32", "--seed", "0",
                     "--epochs", "2", "--out", out, "--no-progress", check=True)
    meta = json.loads(out.with_suffix(".json").read_text())
    assert 0 <= meta["test_acc"] <= 1 and 0 <= meta["train_acc"] <= 1
    assert json.loads(result.stdout.splitlines()[-1])["test_acc"] == meta["test_acc"]


@pytest.mark.parametrize("args,fragment", [
    (["--dataset", "imagenet"], "unknown dataset 'imagenet'"),
    (["--arch", "resnet"], "unknown architecture 'resnet'"),
    (["--arch", "fc3", "--width", "10"], "--width does not apply to --arch fc3"),
    (["--epochs", "many"], "invalid int value"),
    (["--dataset", "mnist", "--data-root", "/nonexistent"], "not found under /nonexistent"),
])
def test_train_errors_are_one_line(tmp_path, args, fragment):
    out = tmp_path / "x.safetensors"
    assert_one_line_error(run_cli("train", "--out", out, "--epochs", "1", *args), fragment)
    assert not out.exists()


def test_missing_subcommand_is_one_line():
    assert_one_line_error(run_cli(), "required")
