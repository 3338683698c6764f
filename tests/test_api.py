"""The Python API: `lowloss.connect`, `match` and `infer_spec` on nn.Modules, model files and checkpoints, with
named or the user's own data; the same code path as the command line."""

from __future__ import annotations

import copy
import subprocess
import sys

import pandas as pd
import pytest
import torch

import lowloss
from lowloss.errors import LowlossError
from lowloss.nets.spec import permute
from lowloss.training.train import evaluate_model
from tests.conftest import USER_MODEL, assert_one_line_error, evaluated_points, run_main
from tests.user_models import TinyCNN


def test_import_lowloss_is_torch_free_and_offers_the_api():
    code = "import sys, lowloss; print(sorted(n for n in ('torch', 'pandas') if n in sys.modules), lowloss.connect)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.startswith("[] <function connect")
    assert {"connect", "match", "infer_spec", "image_folder", "Connection", "Matching"} <= set(dir(lowloss))


@pytest.fixture(scope="module")
def modules(user_checkpoints):
    return user_checkpoints[2]


def test_connect_on_modules_gives_the_table_worst_point_figure_and_models_along_the_path(modules, digits):
    before = [copy.deepcopy(model.state_dict()) for model in modules]
    result = lowloss.connect(
        *modules,
        "linear",
        train=(digits.x_train, digits.y_train),
        test=(digits.x_test, digits.y_test),
        points=5,
        progress=False,
    )
    assert list(result.table.columns)[:3] == ["method", "arch", "leg"] and set(result.table["split"]) == {
        "train",
        "test",
    }
    assert (result.table["arch"] == USER_MODEL).all()
    worst = result.worst["test"]
    rows = result.table[result.table["split"] == "test"]
    assert worst["acc"] == rows["acc"].min() and 0 < worst["position"] < 1
    for model, position in zip(modules, (0, len(result.path))):
        at = result.model_at(position)
        assert type(at) is TinyCNN and not at.training
        assert all(torch.equal(value, model.state_dict()[key]) for key, value in at.state_dict().items())
    middle = result.model_at(0.5).state_dict()
    torch.testing.assert_close(middle["fc.weight"], (modules[0].fc.weight + modules[1].fc.weight).detach() / 2)
    figure = result.figure()
    assert [line.get_label() for line in figure.axes[0].get_lines()] == ["train", "test"]
    for model, state in zip(modules, before):  # the user's modules are left as they were
        assert all(torch.equal(value, state[key]) for key, value in model.state_dict().items()) and not model.training


def test_the_model_at_a_point_computes_what_the_table_says(modules, digits):
    result = lowloss.connect(*modules, "weight-matching", train="digits", points=3, bn_batches=2, progress=False)
    table = result.table[result.table["split"] == "test"]
    for position in (0.5, 1.5, float(table["position"].iloc[len(table) // 2])):
        expected = table.loc[(table["position"] - position).abs() < 1e-9, "acc"]
        _, acc = evaluate_model(result.model_at(position), digits.x_test, digits.y_test)
        assert acc == pytest.approx(float(expected.iloc[0]), abs=1e-9), position


def test_the_api_and_the_command_line_give_the_same_table(user_checkpoints, tmp_path, capsys):
    a, b, modules = user_checkpoints
    out = tmp_path / "wm.csv"
    cli = ["connect", a, b, "--model", USER_MODEL, "--method", "weight-matching", "--bn-batches", "2"]
    assert run_main(capsys, *cli, "--points", "3", "--out", out, "--no-progress").returncode == 0
    api = lowloss.connect(*modules, "weight-matching", train="digits", points=3, bn_batches=2, progress=False)
    pd.testing.assert_frame_equal(evaluated_points(out), evaluated_points(api.table), check_dtype=False)
    assert api.summary()["worst_test_acc"] == pd.read_csv(out).query("split == 'test'")["acc"].min()


def test_connect_on_model_files_and_named_data(digits_endpoints):
    a, b = digits_endpoints(16, 0, 1), digits_endpoints(16, 1, 1)
    result = lowloss.connect(a, b, "arc", train="digits", points=3, progress=False)
    assert result.arch == "onehidden" and len(result.table) == 2 * 3


def test_a_user_dataset_without_a_test_split_is_evaluated_on_its_training_split(modules, digits):
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(digits.x_train[:100], digits.y_train[:100]))
    result = lowloss.connect(*modules, "linear", train=loader, points=2, progress=False)
    assert set(result.table["split"]) == {"train"} and "worst_test_acc" not in result.summary()


def test_match_recovers_a_planted_permutation_and_aligns_b_to_a(modules):
    model_a = modules[0]
    spec = lowloss.infer_spec(model_a, torch.zeros(5, 1, 8, 8))
    assert spec == model_a.spec()
    gen = torch.Generator().manual_seed(3)
    theta = model_a.state_dict()
    shuffled = permute(
        theta, spec, {group: torch.randperm(spec.size(theta, group), generator=gen) for group in spec.groups}
    )
    model_b = TinyCNN()
    model_b.load_state_dict(shuffled)
    for method, options in (("weight-matching", {}), ("weight-matching", {"wm_sweeps": 0}), ("ot", {})):
        matching = lowloss.match(model_a, model_b.eval(), method, input_size=(1, 8, 8), **options)
        aligned = matching.aligned().state_dict()
        assert all(torch.equal(aligned[key], value) for key, value in theta.items()), method
        assert sum(matching.units_moved.values()) > 0
        assert (matching.fitted or {}).get("sweeps") == options.get("wm_sweeps")  # a budget is recorded when set


def test_a_route_matching_needs_data_and_a_module_pair_a_shape():
    model = TinyCNN()
    with pytest.raises(LowlossError, match="pass train= .* or input_size="):
        lowloss.match(model, TinyCNN(), "weight-matching")
    with pytest.raises(LowlossError, match="ot\\+wa fits weight adjustments on training data"):
        lowloss.match(model, TinyCNN(), "ot+wa", input_size=(1, 8, 8))


@pytest.mark.parametrize(
    "models,fragment",
    [
        ((TinyCNN(), TinyCNN((4, 6))), "model_b: tensor 'conv2.weight' has shape [6, 4, 3, 3]"),
        ((TinyCNN(), "b.safetensors"), "must both be nn.Modules or both model files"),
    ],
)
def test_models_of_different_architectures_are_refused(models, fragment):
    with pytest.raises(LowlossError) as error:
        lowloss.connect(*models, "linear", train="digits", progress=False)
    assert fragment in str(error.value)


def test_the_command_line_reports_the_apis_errors_in_one_line(user_checkpoints, tmp_path, capsys):
    a, b, _ = user_checkpoints
    out = tmp_path / "x.csv"
    result = run_main(capsys, "connect", a, b, "--model", USER_MODEL, "--method", "ot-wa", "--out", out)
    assert_one_line_error(result, "unknown method 'ot-wa' (did you mean `ot+wa`?)")
    assert not out.exists()
