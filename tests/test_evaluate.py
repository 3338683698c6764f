"""The evaluation engine: batched points equal single points, incremental swap legs equal full passes."""

import pandas as pd
import pytest
import torch

from lowloss.connect.interpolate import arc_leg
from lowloss.connect.path import Leg, Path, stack_params
from lowloss.connect.permutation import permutation_legs
from lowloss.evaluate import OneHiddenForm, evaluate_path, evaluate_stacked, worst_points
from lowloss.models import build_model
from tests.test_interpolate import random_params


def assert_same_tables(a: pd.DataFrame, b: pd.DataFrame) -> None:
    assert a[["leg", "leg_name", "t", "split"]].equals(b[["leg", "leg_name", "t", "split"]])
    torch.testing.assert_close(torch.tensor(a["loss"].values), torch.tensor(b["loss"].values), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(torch.tensor(a["acc"].values), torch.tensor(b["acc"].values))


def test_points_evaluated_together_equal_points_evaluated_alone(digits):
    model = build_model("onehidden", (1, 8, 8), 10, {"width": 20}).eval()
    leg = Leg(random_params(0, 20), random_params(1, 20))
    ts = [0.0, 0.2, 0.5, 1.0]
    x, y = digits.split("test")
    loss, acc = evaluate_stacked(model, leg.at(ts), x, y, batch=100)
    for i, t in enumerate(ts):
        loss_i, acc_i = evaluate_stacked(model, leg.at([t]), x, y, batch=len(x))
        torch.testing.assert_close(loss[i:i + 1], loss_i, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(acc[i:i + 1], acc_i)


@pytest.mark.parametrize("grid", [None, (0.0, 0.3, 1.0)])
def test_fast_paths_equal_a_full_forward_pass_on_every_leg(digits, grid):
    model = build_model("onehidden", (1, 8, 8), 10, {"width": 24}).eval()
    theta_a, theta_b = random_params(0, 24), random_params(1, 24)
    perm = torch.randperm(24, generator=torch.Generator().manual_seed(0))
    swaps = permutation_legs(theta_b, model.spec(), {"h1": perm})
    if grid is not None:
        for leg in swaps:
            leg.eval_ts = grid
    path = Path([arc_leg(theta_a, swaps[0].start, model.spec(), "h1"), *swaps], "ot")
    assert OneHiddenForm.of(model, theta_b, digits.x_train[:64]) is not None
    incremental = evaluate_path(model, path, digits, points=5, progress=False)
    full = evaluate_path(model, path, digits, points=5, progress=False, fast=False)
    assert len(incremental) == 2 * (5 + len(swaps) * (len(grid) if grid else 1))
    assert_same_tables(incremental, full)


def test_architectures_without_the_one_hidden_readout_fall_back_to_full_passes(digits):
    options = {"widths": [10, 6]}
    model = build_model("fc3", (1, 8, 8), 10, options).eval()
    theta_b = random_params(0, arch="fc3", options=options)
    swaps = permutation_legs(theta_b, model.spec(), {"h1": torch.roll(torch.arange(10), 1), "h2": torch.arange(6)})
    assert OneHiddenForm.of(model, theta_b, digits.x_train[:64]) is None
    table = evaluate_path(model, Path(swaps, "ot"), digits, progress=False)
    assert len(table) == 2 * len(swaps)
    midpoint = {k: v[0] for k, v in swaps[0].at([0.5]).items()}
    x, y = digits.split("train")
    loss, _ = evaluate_stacked(model, stack_params([midpoint]), x, y, batch=len(x))
    assert table.loc[(table.leg == 0) & (table.split == "train"), "loss"].item() == pytest.approx(loss.item(), 1e-6)


def test_worst_point_is_the_lowest_accuracy_per_split():
    table = pd.DataFrame({"split": ["train", "train", "test", "test"], "acc": [0.9, 0.7, 0.8, 0.85],
                          "loss": [0.1, 0.5, 0.3, 0.2], "position": [0.0, 0.5, 0.0, 1.0],
                          "leg_name": ["a", "a", "a", "a"]})
    worst = worst_points(table)
    assert worst["train"]["acc"] == 0.7 and worst["train"]["position"] == 0.5
    assert worst["test"]["acc"] == 0.8 and worst["test"]["loss"] == 0.3
