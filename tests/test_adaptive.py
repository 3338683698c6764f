"""`--points auto`: the golden-section search finds a known minimum within its tolerance, on a function and on a
synthetic leg, each split's search on that split; the table keeps every evaluated point; the option and the workflow
key refuse bad values."""

import pytest
import torch

from lowloss.evaluate import engine
from lowloss.evaluate.adaptive import AUTO, COARSE_POINTS, TOLERANCE, golden_search, search_steps
from lowloss.evaluate.engine import evaluate_path, worst_points
from lowloss.nets.network import Network
from lowloss.paths.legs import Leg, Path
from lowloss.storage.model_files import load_model
from tests.conftest import assert_one_line_error, run_cli

LOWEST = 0.37  # where the synthetic leg is worst: not on the coarse grid, nor on the 21-point grid


def counted(f):
    """`f` as a search key that records every t it is asked for."""
    asked = []

    def key(t):
        asked.append(t)
        return (f(t), 0.0)

    return key, asked


@pytest.mark.parametrize("lowest", [0.0, 0.1, LOWEST, 0.49, 0.5])
def test_golden_search_finds_the_minimum_of_its_bracket_within_tolerance(lowest):
    key, asked = counted(lambda t: abs(t - lowest))
    found = golden_search(key, 0.0, 0.25, 0.5)
    assert abs(found - lowest) <= TOLERANCE
    assert len(asked) <= search_steps() + 3  # x itself, and at most two steps that only move x to an end


def test_golden_search_never_returns_a_point_worse_than_where_it_started():
    key, _ = counted(lambda t: [3.0, 1.0, 2.0][min(int(t * 3), 2)])  # not one minimum: steps
    assert key(golden_search(key, 0.0, 0.5, 1.0))[0] <= 1.0
    with pytest.raises(ValueError, match="does not hold its lowest point"):
        golden_search(key, 0.0, 1.5, 1.0)


def bump_path(theta: dict) -> Path:
    """Θ, then a leg on which the output layer is scaled by 1 − 0.9·max(0, 1 − |t − LOWEST| / 0.3): the same
    predictions everywhere (the accuracy ties), the highest loss at t = LOWEST only."""

    def scaled(t: torch.Tensor) -> dict:
        scale = 1 - 0.9 * (1 - (t - LOWEST).abs() / 0.3).clamp(min=0)
        stacked = {key: value.unsqueeze(0).repeat(len(t), *([1] * value.dim())) for key, value in theta.items()}
        for key in ("fc2.weight", "fc2.bias"):
            stacked[key] = stacked[key] * scale.reshape(-1, *([1] * theta[key].dim())).to(theta[key])
        return stacked

    return Path([Leg(theta, theta, "still"), Leg(theta, theta, "bump", fn=scaled)], "bump")


def test_auto_points_find_a_synthetic_legs_worst_point_within_tolerance_at_fewer_evaluations(digits, digits_endpoints):
    model, artifact = load_model(digits_endpoints(16, 0, 5))
    network, path = Network(model), bump_path(artifact.tensors)
    auto = evaluate_path(network, path, digits, AUTO, progress=False)
    grid = evaluate_path(network, path, digits, 21, progress=False)
    for split in ("train", "test"):
        found = worst_points(auto)[split]
        assert abs(found["position"] - (1 + LOWEST)) <= TOLERANCE
    for split in ("train", "test"):
        evaluations, fixed_grid = auto[auto["split"] == split], grid[grid["split"] == split]
        assert len(evaluations) < len(fixed_grid) / 2
        assert len(evaluations) <= 2 * COARSE_POINTS + search_steps() + 3
        assert {0.0, 0.25, 0.5, 0.75, 1.0} <= set(evaluations.query("leg == 1")["t"])  # the coarse grid is kept


def test_auto_points_evaluate_the_test_splits_search_on_the_test_split_only(digits, digits_endpoints, monkeypatch):
    """Accuracy worst at t = 0.3 on the training split and at 0.8 on the test split (synthetic rows): the training
    split's search points are evaluated on both splits, the test split's on the smaller test split only."""
    model, artifact = load_model(digits_endpoints(16, 0, 5))
    lowest = {"train": 0.3, "test": 0.8}
    calls = []

    def synthetic(evaluator, method, index, leg, ts, splits):
        calls.append((list(ts), list(splits)))
        rows = []
        for split in splits:
            acc = torch.tensor([0.9 - max(0.0, 0.2 - abs(t - lowest[split])) for t in ts])
            rows += engine.table_rows(method, [(index, leg)] * len(ts), ts, split, 1 - acc, acc)
        return rows

    monkeypatch.setattr(engine, "leg_rows", synthetic)
    path = Path([Leg(artifact.tensors, artifact.tensors, "still")], "synthetic")
    table = evaluate_path(Network(model), path, digits, AUTO, progress=False)
    for split, found in worst_points(table).items():
        assert abs(found["position"] - lowest[split]) <= TOLERANCE
    searched = [(ts[0], splits) for ts, splits in calls if len(ts) == 1]
    assert {t for t, splits in searched if splits == ["train", "test"]} and all(
        abs(t - lowest["train"]) < 0.25 for t, splits in searched if splits == ["train", "test"]
    )
    test_only = [t for t, splits in searched if splits == ["test"]]
    assert test_only and all(abs(t - lowest["test"]) < 0.25 for t in test_only)
    assert all(splits in (["train", "test"], ["test"]) for _, splits in searched)


@pytest.mark.parametrize(
    "points,fragment",
    [
        ("0", "argument --points: must be at least 1, got 0"),
        ("often", "argument --points: expected an integer or 'auto'"),
    ],
)
def test_connect_refuses_a_bad_points_value_in_one_line(digits_endpoints, tmp_path, points, fragment):
    a, b = digits_endpoints(16, 0, 1), digits_endpoints(16, 1, 1)
    out = tmp_path / "path.csv"
    result = run_cli("connect", a, b, "--method", "linear", "--points", points, "--out", out)
    assert_one_line_error(result, fragment)
    assert not out.exists()
