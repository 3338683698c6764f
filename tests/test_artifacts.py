"""Safe artifacts: atomic round trip and one clear error for every kind of bad file."""

import json
import os
import shutil

import pytest
import torch

from lowloss.artifacts import ArtifactError, load_weights, save_weights, sidecar_path
from tests.conftest import assert_one_line_error, run_cli


@pytest.fixture
def saved(tmp_path):
    path = tmp_path / "w.safetensors"
    save_weights(path, {"a": torch.arange(6.0).reshape(2, 3), "b": torch.ones(4)}, {"kind": "test", "seed": 1})
    return path


def test_round_trip(saved):
    artifact = load_weights(saved)
    umask = os.umask(0)
    os.umask(umask)
    assert saved.stat().st_mode & 0o777 == 0o666 & ~umask
    assert torch.equal(artifact.tensors["a"], torch.arange(6.0).reshape(2, 3))
    assert artifact.meta["seed"] == 1 and artifact.meta["tensors"]["b"]["shape"] == [4]
    assert [p.name for p in saved.parent.iterdir() if p.name.endswith(".tmp")] == []


def test_refuses_to_save_nan(tmp_path):
    with pytest.raises(ArtifactError, match="NaN"):
        save_weights(tmp_path / "x.safetensors", {"a": torch.tensor([float("nan")])}, {})
    assert not (tmp_path / "x.safetensors").exists()


def _truncate(path):
    path.write_bytes(path.read_bytes()[:40])


def _drop_sidecar(path):
    sidecar_path(path).unlink()


def _swap_sidecar(path):
    other = path.with_name("other.safetensors")
    save_weights(other, {"a": torch.zeros(2, 3), "b": torch.zeros(4)}, {"kind": "test"})
    shutil.copy(sidecar_path(other), sidecar_path(path))


def _nan_weights(path):
    from safetensors.torch import save_file

    save_file({"a": torch.full((2, 3), float("nan")), "b": torch.ones(4)}, str(path))
    meta = json.loads(sidecar_path(path).read_text())
    from lowloss.artifacts import file_sha256

    meta["sha256"] = file_sha256(path)
    sidecar_path(path).write_text(json.dumps(meta))


def _garbage_sidecar(path):
    sidecar_path(path).write_text("{not json")


def _missing(path):
    path.unlink()


@pytest.mark.parametrize("damage,message", [
    (_missing, "file not found"),
    (_truncate, "do not match its sidecar"),
    (_drop_sidecar, "sidecar w.json is missing"),
    (_swap_sidecar, "do not match its sidecar"),
    (_nan_weights, "NaN or Inf"),
    (_garbage_sidecar, "not valid JSON"),
])
def test_bad_files_give_one_clear_error(saved, damage, message):
    damage(saved)
    with pytest.raises(ArtifactError, match=message):
        load_weights(saved)
    assert_one_line_error(run_cli("info", saved), str(saved.parent), message)


def test_info_prints_the_summary(saved):
    result = run_cli("info", saved, check=True)
    assert "2 tensors, 10 parameters" in result.stdout and "seed: 1" in result.stdout
