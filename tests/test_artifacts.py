"""Safe artifacts: one atomic unit per weight file (metadata in the header, the sidecar a copy), the
earlier sidecar format, temp-file leftovers, and one clear error for every kind of bad file."""

import fcntl
import json
import logging
import os
import shutil

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save, save_file

from lowloss.storage.atomic import ArtifactError
from lowloss.storage.header import HEADER_KEY, LEGACY_FORMAT, meta_checksum
from lowloss.storage.weights import (
    file_sha256,
    load_weights,
    read_meta,
    save_weights,
    sidecar_path,
    tensors_sha256,
)
from tests.conftest import assert_one_line_error, run_cli

TENSORS = {"a": torch.arange(6.0).reshape(2, 3), "b": torch.ones(4)}


@pytest.fixture
def saved(tmp_path):
    path = tmp_path / "w.safetensors"
    save_weights(path, TENSORS, {"kind": "test", "seed": 1})
    return path


def test_round_trip(saved):
    artifact = load_weights(saved)
    umask = os.umask(0)
    os.umask(umask)
    assert saved.stat().st_mode & 0o777 == 0o666 & ~umask
    assert torch.equal(artifact.tensors["a"], TENSORS["a"])
    assert artifact.meta["seed"] == 1 and artifact.meta["tensors"]["b"]["shape"] == [4]
    assert [p.name for p in saved.parent.iterdir() if p.name.endswith(".tmp")] == []


def test_the_header_is_the_source_of_truth_and_the_sidecar_its_copy(saved):
    with safe_open(str(saved), "pt") as handle:
        header = json.loads(handle.metadata()[HEADER_KEY])
    assert header == json.loads(sidecar_path(saved).read_text()) == read_meta(saved)
    assert header["sha256"] == tensors_sha256(TENSORS)


def test_the_identity_hash_is_the_file_hash_of_the_earlier_format(tmp_path, saved):
    legacy = tmp_path / "legacy.safetensors"
    save_file(TENSORS, str(legacy))
    assert read_meta(saved)["sha256"] == file_sha256(legacy)


def test_a_missing_or_stale_sidecar_is_rewritten_from_the_header(saved, tmp_path, caplog):
    expected = sidecar_path(saved).read_text()
    other = tmp_path / "other.safetensors"
    save_weights(other, {"a": torch.zeros(2, 3)}, {"kind": "other"})
    for damage in (
        lambda: sidecar_path(saved).unlink(),
        lambda: shutil.copy(sidecar_path(other), sidecar_path(saved)),
        lambda: sidecar_path(saved).write_text("{not json"),
    ):
        damage()
        with caplog.at_level(logging.WARNING):
            assert load_weights(saved).meta["kind"] == "test"
        assert sidecar_path(saved).read_text() == expected
    assert "rewritten from the file's header" in caplog.text


def test_earlier_sidecar_files_stay_readable(tmp_path):
    path = tmp_path / "old.safetensors"
    save_file(TENSORS, str(path))
    sidecar_path(path).write_text(
        json.dumps(
            {
                "format": LEGACY_FORMAT,
                "kind": "model",
                "arch": "onehidden",
                "arch_options": {"width": 2},
                "input_shape": [3],
                "num_classes": 2,
                "dataset": "digits",
                "sha256": file_sha256(path),
                "tensors": {"a": {"shape": [2, 3]}, "b": {"shape": [4]}},
            }
        )
    )
    artifact = load_weights(path)
    assert artifact.meta["kind"] == "model" and torch.equal(artifact.tensors["b"], TENSORS["b"])
    sidecar_path(path).write_text(json.dumps({**artifact.meta, "sha256": "0" * 64}))
    with pytest.raises(ArtifactError, match="do not match its sidecar"):
        load_weights(path)
    sidecar_path(path).unlink()
    with pytest.raises(ArtifactError, match="no lowloss metadata in its header and sidecar old.json is missing"):
        load_weights(path)


def test_leftover_temp_files_go_with_the_next_write_but_not_a_write_in_progress(saved):
    left = saved.parent / f".{saved.name}.killed.tmp"
    left.write_bytes(b"half a file")
    busy = saved.parent / f".{saved.name}.busy.tmp"
    with open(busy, "wb") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # as a live writer holds it
        save_weights(saved, TENSORS, {"kind": "test", "seed": 2})
        assert not left.exists() and busy.exists()
    assert read_meta(saved)["seed"] == 2


def test_a_failed_write_names_the_file_and_leaves_nothing_behind(saved):
    blocked = saved.parent / "file"
    blocked.write_text("a file, not a folder")
    with pytest.raises(ArtifactError, match="file/w.safetensors: cannot write"):
        save_weights(blocked / "w.safetensors", TENSORS, {"kind": "test"})
    assert sorted(p.name for p in saved.parent.iterdir()) == ["file", "w.json", "w.safetensors"]


def _truncate(path):
    path.write_bytes(path.read_bytes()[:-4])


def _flip_a_weight(path):
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))


def _nan_weights(path):
    tensors = {"a": torch.full((2, 3), float("nan")), "b": torch.ones(4)}
    meta = {**read_meta(path), "sha256": tensors_sha256(tensors)}
    meta["checksum"] = meta_checksum(meta)  # a whole new header: only the tensors tell
    path.write_bytes(save(tensors, metadata={HEADER_KEY: json.dumps(meta)}))


def _garbage_header(path):
    path.write_bytes(save(TENSORS, metadata={HEADER_KEY: "{not json"}))


def _foreign_file(path):
    save_file(TENSORS, str(path))
    sidecar_path(path).unlink()


def _missing(path):
    path.unlink()


def _link_loop(path):
    path.unlink()
    path.symlink_to(path.name)


def _folder(path):
    path.unlink()
    path.mkdir()


@pytest.mark.parametrize(
    "damage,message",
    [
        (_missing, "file not found"),
        (_truncate, "not a readable safetensors file"),
        (_flip_a_weight, "tensors do not match the hash in its header"),
        (_nan_weights, "NaN or Inf"),
        (_garbage_header, "metadata in the header is not valid JSON"),
        (_foreign_file, "no lowloss metadata in its header and sidecar w.json is missing"),
        (_link_loop, "cannot be read (symbolic link loop)"),
        (_folder, "is a folder, not a file"),
    ],
)
def test_bad_files_give_one_clear_error(saved, damage, message):
    damage(saved)
    with pytest.raises(ArtifactError) as error:
        load_weights(saved)
    assert message in str(error.value)
    assert_one_line_error(run_cli("info", saved), str(saved.parent), message)


def test_info_prints_the_summary(saved):
    result = run_cli("info", saved, check=True)
    assert "2 tensors, 10 parameters" in result.stdout and "seed: 1" in result.stdout
