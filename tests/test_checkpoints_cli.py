"""The command line on the user's own checkpoints (`--model REF`): connect, match, import, ensemble and info take
them like lowloss model files, and every bad input is one line, exit 2, with nothing written."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
from safetensors.torch import save_file

from lowloss.ensemble.backbone import load_ensemble
from lowloss.storage.model_files import load_model
from lowloss.storage.weights import file_sha256
from lowloss.training.train import evaluate_model
from lowloss.training.user_data import image_folder
from tests.conftest import USER_MODEL, assert_one_line_error, evaluated_points, run_main
from tests.test_user_data import write_images
from tests.user_models import TinyCNN

MODEL = ["--model", USER_MODEL]


def connect(capsys, a, b, out, *options) -> dict:
    result = run_main(capsys, "connect", a, b, *MODEL, "--points", "3", "--out", out, "--no-progress", *options)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1])


def test_checkpoints_are_read_as_the_models_they_are(user_checkpoints, digits, tmp_path, capsys):
    a, b, models = user_checkpoints
    summary = connect(capsys, a, b, tmp_path / "linear.csv", "--method", "linear")
    table = pd.read_csv(tmp_path / "linear.csv").query("split == 'test'")
    own = [evaluate_model(model, digits.x_test, digits.y_test)[1] for model in models]
    assert [table["acc"].iloc[0], table["acc"].iloc[-1]] == own  # Θ^A and Θ^B score as the user's own modules
    assert summary["endpoint_test_acc"] == min(own) > 0.8 and (table["arch"] == USER_MODEL).all()


def test_the_route_and_weight_matching_with_measured_statistics_run_on_checkpoints(user_checkpoints, tmp_path, capsys):
    a, b, _ = user_checkpoints
    wm = connect(capsys, a, b, tmp_path / "wm.csv", "--method", "weight-matching", "--bn-batches", "4")
    route = connect(capsys, a, b, tmp_path / "route.csv", "--method", "ot+wa")
    linear = connect(capsys, a, b, tmp_path / "linear.csv", "--method", "linear")
    assert wm["bn_samples"] == 4 * 128 and route["legs"] > 1
    assert min(wm["worst_test_acc"], route["worst_test_acc"]) > linear["worst_test_acc"]


def test_a_saved_matching_of_checkpoints_gives_the_path_it_would_compute(user_checkpoints, tmp_path, capsys):
    a, b, _ = user_checkpoints
    matching = tmp_path / "m.safetensors"
    result = run_main(capsys, "match", a, b, *MODEL, "--method", "weight-matching", "--out", matching)
    assert result.returncode == 0, result.stderr
    connect(capsys, a, b, tmp_path / "given.csv", "--method", "weight-matching", "--matching", matching)
    connect(capsys, a, b, tmp_path / "computed.csv", "--method", "weight-matching")
    pd.testing.assert_frame_equal(evaluated_points(tmp_path / "given.csv"), evaluated_points(tmp_path / "computed.csv"))


def test_an_imported_checkpoint_is_a_model_file_every_command_reads(user_checkpoints, digits, tmp_path, capsys):
    a, b, models = user_checkpoints
    imported = []
    for checkpoint in (a, b):
        out = tmp_path / f"{checkpoint.stem}.safetensors"
        assert run_main(capsys, "import", checkpoint, *MODEL, "--out", out, "--no-progress").returncode == 0
        imported.append(out)
    model, artifact = load_model(imported[0])
    meta = artifact.meta
    assert (meta["arch"], meta["arch_options"], meta["input_shape"], meta["num_classes"]) == (
        USER_MODEL,
        {},
        [1, 8, 8],
        10,
    )
    assert meta["checkpoint_sha256"] == file_sha256(a) and meta["dataset"] == "digits"
    assert meta["test_acc"] == evaluate_model(models[0], digits.x_test, digits.y_test)[1]
    assert isinstance(model, TinyCNN)
    run_main(capsys, "connect", *imported, "--method", "arc", "--points", "3", "--out", tmp_path / "files.csv")
    connect(capsys, a, b, tmp_path / "checkpoints.csv", "--method", "arc")
    pd.testing.assert_frame_equal(
        evaluated_points(tmp_path / "files.csv"), evaluated_points(tmp_path / "checkpoints.csv")
    )


def test_an_ensemble_of_checkpoints_is_saved_and_read_back(tmp_path, capsys):
    torch.manual_seed(0)
    members = [TinyCNN(batch_norm=False) for _ in range(2)]  # a chain of layers, as an ensemble's members are
    files = [tmp_path / "a.pt", tmp_path / "b.pt"]
    for member, file in zip(members, files):
        torch.save(member.state_dict(), file)
    out = tmp_path / "ind.safetensors"
    options = ["--model-args", "batch_norm=false", "--independent", "--out", out]
    result = run_main(capsys, "ensemble", *files, *MODEL, *options)
    assert result.returncode == 0, result.stderr
    ensemble, artifact = load_ensemble(out)
    assert (artifact.meta["arch"], artifact.meta["arch_options"]) == (USER_MODEL, {"batch_norm": False})
    for member, head in zip(members, ensemble.heads):
        assert all(torch.equal(value, member.state_dict()[key]) for key, value in head.items())


def test_info_shows_the_spec_of_a_model_with_or_without_a_checkpoint(user_checkpoints, capsys):
    a, _, _ = user_checkpoints
    result = run_main(capsys, "info", a, *MODEL, "--input-size", "1,8,8")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"{USER_MODEL} {{}}: ") and "inputs 1×8×8, 10 outputs" in lines[0]
    assert "2 groups of units; 13 of 16 tensors permute" in lines[1]
    assert lines[2].split()[:3] == ["c1", "4", "units"] and lines[3].split()[:3] == ["c2", "8", "units"]
    assert any(line.startswith("  methods that apply: linear, arc, ot, weight-matching") for line in lines)
    result = run_main(capsys, "info", *MODEL, "--model-args", "channels=[3,5]", "--input-size", "1,8,8", "--json")
    summary = json.loads(result.stdout)
    assert {group: entry["units"] for group, entry in summary["groups"].items()} == {"c1": 3, "c2": 5}
    assert summary["groups"]["c1"]["members"][:2] == ["conv1.weight[0]", "conv1.bias[0]"]


def test_an_image_folder_is_the_data_of_the_users_models(tmp_path, capsys):
    write_images(tmp_path / "images", {"train": 6, "test": 4})
    torch.manual_seed(0)
    models = [TinyCNN(num_classes=2).eval() for _ in range(2)]
    for model, name in zip(models, ("a.safetensors", "b.safetensors")):
        save_file(model.state_dict(), str(tmp_path / name))
    options = ["--image-folder", tmp_path / "images", "--input-size", "1,8,8", "--model-args", "num_classes=2"]
    out = tmp_path / "linear.csv"
    summary = connect(
        capsys, tmp_path / "a.safetensors", tmp_path / "b.safetensors", out, "--method", "linear", *options
    )
    data = image_folder(tmp_path / "images", (1, 8, 8), progress=False)
    assert (
        pd.read_csv(out).query("split == 'test'")["acc"].iloc[0]
        == evaluate_model(models[0], data.x_test, data.y_test)[1]
    )
    assert summary["points"] == 3


def test_an_image_folder_of_a_timm_model_takes_its_pretrained_config(tmp_path):
    import argparse

    from lowloss.cli.options import dataset_from_args
    from lowloss.nets.external import build_reference

    write_images(tmp_path, {"train": 2, "test": 1})
    args = argparse.Namespace(image_folder=tmp_path, device="cpu", input_size=None, normalize=None, no_progress=True)
    data = dataset_from_args(args, build_reference("timm:resnet10t"))
    imagenet = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))  # resnet10t's pretrained mean and deviation
    expected = image_folder(tmp_path, (3, 176, 176), imagenet, progress=False)  # and its input size
    assert torch.equal(data.x_train, expected.x_train) and torch.equal(data.x_test, expected.x_test)


@pytest.fixture(scope="module")
def bad_checkpoints(user_checkpoints, tmp_path_factory):
    """Checkpoints that do not fit TinyCNN, each in its own way."""
    folder = tmp_path_factory.mktemp("bad")
    state = user_checkpoints[2][0].state_dict()
    torch.save(user_checkpoints[2][0], folder / "pickled.pt")
    torch.save({k: v for k, v in state.items() if k != "bn1.running_mean"}, folder / "missing.pt")
    torch.save({**state, "head.weight": torch.zeros(2)}, folder / "extra.pt")
    save_file({**state, "fc.weight": torch.zeros(3, 8)}, str(folder / "shape.safetensors"))
    save_file({**state, "fc.bias": torch.full((10,), float("inf"))}, str(folder / "inf.safetensors"))
    torch.save({**state, "conv2.bias": torch.full((8,), float("nan"))}, folder / "nan.pt")
    torch.save(
        {key: value.half() if value.is_floating_point() else value for key, value in state.items()}, folder / "half.pt"
    )
    save_file({**state, "fc.weight": state["fc.weight"].round().long()}, str(folder / "int.safetensors"))
    torch.save({**state, "bn1.weight": state["bn1.weight"].bfloat16()}, folder / "bf16.pt")
    return folder


@pytest.mark.parametrize(
    "command,file,options,fragment",
    [
        (
            "connect",
            "a",
            ["--model", "torchvision:resnet19"],
            "unknown torchvision model 'resnet19' (did you mean `resnet18`?)",
        ),
        (
            "connect",
            "a",
            ["--model", "resnet18"],
            "model 'resnet18' is not a reference (did you mean `torchvision:resnet18`?)",
        ),
        (
            "connect",
            "pickled.pt",
            MODEL,
            "needs code to be unpickled (tests.user_models.TinyCNN), which lowloss never runs",
        ),
        ("connect", "missing.pt", MODEL, "has no tensor 'bn1.running_mean', which tests.user_models:TinyCNN needs"),
        ("connect", "extra.pt", MODEL, "tensor 'head.weight' is not in tests.user_models:TinyCNN"),
        (
            "import",
            "shape.safetensors",
            MODEL,
            "tensor 'fc.weight' has shape [3, 8], tests.user_models:TinyCNN needs [10, 32]",
        ),
        ("match", "inf.safetensors", MODEL, "tensor 'fc.bias' contains NaN or Inf values"),
        ("import", "nan.pt", MODEL, "nan.pt: tensor 'conv2.bias' contains NaN or Inf values"),
        ("connect", "half.pt", MODEL, "half.pt: tensor 'conv1.weight' is float16; lowloss reads weights in float32 or"),
        ("import", "int.safetensors", MODEL, "int.safetensors: tensor 'fc.weight' is int64; lowloss reads weights in"),
        ("ensemble", "bf16.pt", MODEL, "bf16.pt: tensor 'bn1.weight' is bfloat16; lowloss reads weights in"),
        (
            "connect",
            "a",
            [*MODEL, "--input-size", "3,8,8"],
            "tests.user_models:TinyCNN does not take inputs of size 3×8×8",
        ),
        ("connect", "a", [*MODEL, "--model-args", "width=4"], "cannot build it with arguments {'width': 4}"),
        ("connect", "a", ["--model-args", "num_classes=10"], "--model-args and --freeze describe a --model"),
        ("connect", "a", [*MODEL, "--model-args", "channels="], "argument --model-args: model arguments 'channels='"),
        ("connect", "a", [*MODEL, "--normalize", "0.5,0"], "argument --normalize: deviations must be greater than 0"),
        ("import", "a", [], "import needs --model REF"),
        ("connect", "a", [*MODEL, "--dataset", "mnist", "--image-folder", "x"], "not allowed with argument --dataset"),
        ("connect", "a", [], "a.pt: a PyTorch checkpoint, not a lowloss model file: name its network with --model"),
        ("info", "a", [], "a.pt: a PyTorch checkpoint, not a lowloss model file: name its network with --model"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(
    user_checkpoints, bad_checkpoints, tmp_path, capsys, command, file, options, fragment
):
    a, b, _ = user_checkpoints
    first = a if file == "a" else bad_checkpoints / file
    out = tmp_path / "out"
    out.mkdir()
    target = out / ("x.csv" if command == "connect" else "x.safetensors")
    endpoints = [first] if command in ("import", "info") else [first, b]
    extra = {"connect": ["--method", "linear"], "ensemble": ["--independent"]}.get(command, [])
    written = [] if command == "info" else ["--out", target]
    result = run_main(capsys, command, *endpoints, *options, *extra, *written)
    assert_one_line_error(result, fragment)
    assert list(out.iterdir()) == []


def test_frozen_modules_reach_the_spec_and_are_recorded(user_checkpoints, tmp_path, capsys, monkeypatch):
    """`--freeze` goes to the spec of the models (whose inference decides what it means), directly and through the
    model files `import` writes."""
    from lowloss.storage import model_files

    seen = []

    def spec_of(model, input_shape, freeze=()):
        seen.append((tuple(input_shape), tuple(freeze)))
        return model.spec()

    monkeypatch.setattr(model_files, "model_spec", spec_of)
    a, b, _ = user_checkpoints
    frozen = ["--freeze", "fc", "--freeze", "conv1"]
    imported = [tmp_path / "a.safetensors", tmp_path / "b.safetensors"]
    for checkpoint, out in zip((a, b), imported):
        assert run_main(capsys, "import", checkpoint, *MODEL, *frozen, "--out", out).returncode == 0
    assert load_model(imported[0])[1].meta["freeze"] == ["fc", "conv1"]
    assert run_main(capsys, "connect", *imported, "--method", "linear", "--out", tmp_path / "files.csv").returncode == 0
    assert seen[-1] == ((1, 8, 8), ("fc", "conv1"))
    connect(capsys, a, b, tmp_path / "checkpoints.csv", "--method", "linear", "--freeze", "bn2")
    assert seen[-1] == ((1, 8, 8), ("bn2",))
