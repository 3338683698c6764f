"""The model set V: a manifest pinning trained models of one architecture and dataset by hash."""

import json
import re
import shutil

import pytest

from lowloss.errors import LowlossError
from lowloss.storage.model_set import load_model_set, write_model_set
from lowloss.storage.weights import read_meta
from tests.conftest import assert_one_line_error, copy_model, copy_with_meta, run_main

WIDTH, EPOCHS = 64, 2


@pytest.fixture(scope="module")
def models(digits_endpoints):
    return [digits_endpoints(WIDTH, seed, EPOCHS) for seed in range(3)]


def test_manifest_pins_members_by_hash_and_travels_with_its_folder(models, tmp_path):
    folder = tmp_path / "results"
    (folder / "models").mkdir(parents=True)
    local = [copy_model(m, folder / "models" / m.name) for m in models]
    manifest = write_model_set(folder / "V.json", local)
    assert manifest["arch"] == "onehidden" and manifest["arch_options"] == {"width": WIDTH}
    assert manifest["dataset"] == "digits" and manifest["input_shape"] == [1, 8, 8]
    assert [m["sha256"] for m in manifest["models"]] == [read_meta(m)["sha256"] for m in local]
    assert all(m["path"].startswith("models/") for m in manifest["models"])
    moved = tmp_path / "moved"
    shutil.move(folder, moved)
    model_set = load_model_set(moved / "V.json")
    assert [a.meta["sha256"] for a in model_set.load()] == [m["sha256"] for m in manifest["models"]]


def test_members_outside_the_manifests_folder_need_allow_outside(models, tmp_path, capsys):
    out = tmp_path / "sets" / "V.json"
    with pytest.raises(LowlossError, match="lies outside the manifest's folder"):
        write_model_set(out, models)
    assert not out.exists()
    write_model_set(out, models, allow_outside=True)
    with pytest.raises(LowlossError, match=r"V.json: member \.\./.*: lies outside the manifest's folder"):
        load_model_set(out)
    assert len(load_model_set(out, allow_outside=True).load()) == len(models)
    base = ["fit-connector", "--kind", "realnvp-flow", "--model-set", out, "--out", tmp_path / "c.safetensors"]
    assert_one_line_error(run_main(capsys, *base), f"{out}: member ", "--allow-outside")
    result = run_main(capsys, "model-set", "--out", out, *models)
    assert_one_line_error(result, f"{out}: member ", "lies outside the manifest's folder")


def test_model_set_command_writes_the_manifest(models, tmp_path, capsys):
    out = tmp_path / "V.json"
    result = run_main(capsys, "model-set", "--out", out, "--allow-outside", *models)
    assert result.returncode == 0, result.stderr
    line = json.loads(result.stdout.strip().splitlines()[-1])
    assert line["models"] == 3 and line["arch"] == "onehidden" and out.exists()


def test_mixed_architectures_are_one_line_errors(models, digits_endpoints, tmp_path, capsys):
    wider = digits_endpoints(2 * WIDTH, 0, EPOCHS)
    result = run_main(capsys, "model-set", "--allow-outside", "--out", tmp_path / "V.json", models[0], wider)
    assert_one_line_error(result, f"{wider}", "differs from", "share architecture and dataset")
    assert not (tmp_path / "V.json").exists()


@pytest.mark.parametrize(
    "bad,fragment",
    [
        ("other-dataset", "differs from"),
        ("duplicate", "same weights as"),
        ("single", "at least two models"),
        ("not-a-model", "this is a fitted connector ν .*, but a trained model .* is expected"),
    ],
)
def test_bad_model_sets(models, tmp_path, bad, fragment):
    files = {
        "other-dataset": [models[0], copy_with_meta(models[1], tmp_path / "m.safetensors", dataset="mnist")],
        "duplicate": [models[0], models[1], copy_model(models[0], tmp_path / "copy.safetensors")],
        "single": models[:1],
        "not-a-model": [models[0], copy_with_meta(models[1], tmp_path / "c.safetensors", kind="connector")],
    }[bad]
    with pytest.raises(LowlossError, match=fragment):
        write_model_set(tmp_path / "V.json", files, allow_outside=True)


def test_member_changed_after_the_manifest_is_refused(models, tmp_path):
    local = [copy_model(m, tmp_path / m.name) for m in models[:2]]
    write_model_set(tmp_path / "V.json", local)
    copy_model(models[2], local[1])
    with pytest.raises(LowlossError, match="changed since"):
        load_model_set(tmp_path / "V.json")
    (tmp_path / "W.json").write_text("{}")
    with pytest.raises(LowlossError, match="not a lowloss model set"):
        load_model_set(tmp_path / "W.json")


def _edit(manifest: dict, case: str, wider: str) -> None:
    """Hand edits of a written manifest that reading must refuse."""
    members = manifest["models"]
    if case == "relabelled":
        manifest["arch_options"] = {"width": WIDTH // 2}
    elif case == "one member":
        del members[1:]
    elif case == "duplicate":
        members[1] = dict(members[0])
    elif case == "empty":
        members.clear()
    elif case == "no path":
        del members[0]["path"]
    elif case == "etc/passwd":
        members[0]["path"] = "../../../etc/passwd"
    elif case == "absolute":
        members[0]["path"] = wider
    elif case == "not a list":
        manifest["models"] = "all of them"
    elif case == "no arch":
        del manifest["arch"]


@pytest.mark.parametrize(
    "case,fragment",
    [
        ("relabelled", "onehidden {'width': 64} on 'digits' differs from the set's onehidden {'width': 32}"),
        ("one member", "a model set needs at least two models, got 1"),
        ("duplicate", "same weights as"),
        ("empty", "a model set needs at least two models, got 0"),
        ("no path", "member 1 needs a 'path' and a 'sha256'"),
        ("etc/passwd", "member ../../../etc/passwd: lies outside the manifest's folder"),
        ("absolute", "lies outside the manifest's folder (pass --allow-outside to use it)"),
        ("not a list", "a model set needs at least two models, got 0"),
        ("no arch", "lacks 'arch'"),
    ],
)
def test_manifests_are_checked_on_every_read(models, digits_endpoints, tmp_path, capsys, case, fragment):
    local = [copy_model(m, tmp_path / m.name) for m in models]
    manifest = write_model_set(tmp_path / "V.json", local)
    _edit(manifest, case, str(digits_endpoints(2 * WIDTH, 0, EPOCHS)))
    (tmp_path / "V.json").write_text(json.dumps(manifest))
    with pytest.raises(LowlossError, match=re.escape(fragment)):
        load_model_set(tmp_path / "V.json")
    result = run_main(
        capsys,
        "fit-connector",
        "--kind",
        "realnvp-flow",
        "--model-set",
        tmp_path / "V.json",
        "--out",
        tmp_path / "c.safetensors",
    )
    assert_one_line_error(result, f"{tmp_path / 'V.json'}: ", fragment)
    assert not (tmp_path / "c.safetensors").exists()


def test_a_missing_member_names_the_manifest_and_the_member(models, tmp_path):
    local = [copy_model(m, tmp_path / m.name) for m in models[:2]]
    write_model_set(tmp_path / "V.json", local)
    local[0].unlink()
    with pytest.raises(LowlossError, match=re.escape(f"V.json: member {local[0]}: file not found")):
        load_model_set(tmp_path / "V.json")
