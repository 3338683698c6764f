"""The model set V: a manifest pinning trained models of one architecture and dataset by hash."""

import json
import shutil

import pytest

from lowloss.artifacts import read_meta
from lowloss.errors import LowlossError
from lowloss.modelset import load_model_set, write_model_set
from tests.conftest import assert_one_line_error, copy_model, copy_with_meta, run_main

WIDTH, EPOCHS = 64, 2


@pytest.fixture(scope="module")
def models(digits_endpoints):
    return [digits_endpoints(WIDTH, seed, EPOCHS) for seed in range(3)]



def test_manifest_pins_members_by_hash_and_travels_with_its_folder(models, tmp_path):
    folder = tmp_path / "results"
    folder.mkdir()
    local = [copy_model(m, folder / m.name) for m in models]
    manifest = write_model_set(folder / "sets" / "V.json", local)
    assert manifest["arch"] == "onehidden" and manifest["arch_options"] == {"width": WIDTH}
    assert manifest["dataset"] == "digits" and manifest["input_shape"] == [1, 8, 8]
    assert [m["sha256"] for m in manifest["models"]] == [read_meta(m)["sha256"] for m in local]
    assert all(m["path"].startswith("../") for m in manifest["models"])
    moved = tmp_path / "moved"
    shutil.move(folder, moved)
    model_set = load_model_set(moved / "sets" / "V.json")
    assert [a.meta["sha256"] for a in model_set.load()] == [m["sha256"] for m in manifest["models"]]


def test_model_set_command_writes_the_manifest(models, tmp_path, capsys):
    out = tmp_path / "V.json"
    result = run_main(capsys, "model-set", "--out", out, *models)
    assert result.returncode == 0, result.stderr
    line = json.loads(result.stdout.strip().splitlines()[-1])
    assert line["models"] == 3 and line["arch"] == "onehidden" and out.exists()


def test_mixed_architectures_are_one_line_errors(models, digits_endpoints, tmp_path, capsys):
    wider = digits_endpoints(2 * WIDTH, 0, EPOCHS)
    result = run_main(capsys, "model-set", "--out", tmp_path / "V.json", models[0], wider)
    assert_one_line_error(result, f"{wider}", "differs from", "share architecture and dataset")
    assert not (tmp_path / "V.json").exists()


@pytest.mark.parametrize("bad,fragment", [
    ("other-dataset", "differs from"),
    ("duplicate", "same weights as"),
    ("single", "at least two models"),
    ("not-a-model", "this is a fitted connector ν .*, but a trained model .* is expected"),
])
def test_bad_model_sets(models, tmp_path, bad, fragment):
    files = {
        "other-dataset": [models[0], copy_with_meta(models[1], tmp_path / "m.safetensors", dataset="mnist")],
        "duplicate": [models[0], models[1], copy_model(models[0], tmp_path / "copy.safetensors")],
        "single": models[:1],
        "not-a-model": [models[0], copy_with_meta(models[1], tmp_path / "c.safetensors", kind="connector")],
    }[bad]
    with pytest.raises(LowlossError, match=fragment):
        write_model_set(tmp_path / "V.json", files)


def test_member_changed_after_the_manifest_is_refused(models, tmp_path):
    local = [copy_model(m, tmp_path / m.name) for m in models[:2]]
    write_model_set(tmp_path / "V.json", local)
    copy_model(models[2], local[1])
    with pytest.raises(LowlossError, match="changed since"):
        load_model_set(tmp_path / "V.json").load()
    (tmp_path / "W.json").write_text("{}")
    with pytest.raises(LowlossError, match="not a lowloss model set"):
        load_model_set(tmp_path / "W.json")
