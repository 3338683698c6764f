"""Garipov et al. curves: coefficients, exact endpoints, training, resume, any architecture, bad input."""

import json

import pytest
import torch
from safetensors.torch import load_file

from lowloss.errors import LowlossError
from lowloss.evaluate import evaluate_path
from lowloss.methods.curves import COEFFICIENTS, Curve, fit_curve, start_bends
from lowloss.methods.registry import CURVES
from lowloss.nets.models import build_model
from lowloss.paths.legs import Leg, Path, chain, interpolate
from lowloss.storage.checkpoints import checkpoint_path
from lowloss.storage.weights import load_weights, save_weights
from lowloss.training.config import TrainConfig
from lowloss.training.train import train_endpoint
from tests.conftest import assert_one_line_error, method_path, run_cli

TS = torch.linspace(0, 1, 1001, dtype=torch.float64)
GARIPOV = [name for name, kind in CURVES.items() if kind.align is None]


def random_params(seed: int, arch: str = "onehidden", options: dict | None = None) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return dict(build_model(arch, (1, 8, 8), 10, options or {"width": 16}).state_dict())


def assert_same_params(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])]


@pytest.mark.parametrize("kind", sorted(COEFFICIENTS))
@pytest.mark.parametrize("n_points", [3, 4, 5])
def test_coefficients_sum_to_one_and_pick_the_endpoints(kind, n_points):
    coeffs = COEFFICIENTS[kind](TS, n_points)
    assert coeffs.shape == (len(TS), n_points)
    assert torch.allclose(coeffs.sum(1), torch.ones(len(TS), dtype=torch.float64), rtol=0, atol=1e-12)
    assert (coeffs >= 0).all()
    assert torch.equal(coeffs[0], torch.eye(n_points, dtype=torch.float64)[0])
    assert torch.equal(coeffs[-1], torch.eye(n_points, dtype=torch.float64)[-1])


@pytest.mark.parametrize("kind", sorted(COEFFICIENTS))
def test_curve_hits_the_endpoints_exactly_and_starts_as_the_straight_line(kind):
    theta_a, theta_b = random_params(0), random_params(1)
    straight = Curve(kind, theta_a, theta_b, start_bends([Leg(theta_a, theta_b)], 5))
    with torch.no_grad():
        assert all(torch.allclose(straight(TS)[k], interpolate(theta_a, theta_b, TS)[k], atol=1e-6) for k in theta_a)
        bent = Curve(kind, theta_a, theta_b, [random_params(2), random_params(3), random_params(4)])
        ends = bent(torch.tensor([0.0, 1.0], dtype=torch.float64))
    assert_same_params({k: v[0] for k, v in ends.items()}, theta_a)
    assert_same_params({k: v[1] for k, v in ends.items()}, theta_b)


def test_polychain_legs_meet_at_the_bends_and_match_the_coefficient_form():
    theta_a, theta_b = random_params(0), random_params(1)
    bends = [random_params(2), random_params(3), random_params(4)]
    control = [theta_a, *bends, theta_b]
    path = Path(chain(control))
    assert path.is_continuous()
    for got, want in zip(path.breakpoints(), control):
        assert_same_params(got, want)
    curve = Curve("polychain", theta_a, theta_b, bends)
    u = torch.linspace(0, 1, 7, dtype=torch.float64)
    with torch.no_grad():
        for index, leg in enumerate(path):
            on_leg, on_curve = leg.at(u), curve((index + u) / len(path))
            assert all(torch.allclose(on_leg[k], on_curve[k], atol=1e-6) for k in theta_a)


# --- training on digits ----------------------------------------------------------------------------------------


def fit(tmp_path, a, b, data, method="garipov-polychain-3", epochs=4, seed=0, name="curve", on_epoch_end=None):
    kind = CURVES[method]
    out = tmp_path / f"{name}.safetensors"
    fit_curve(
        kind.family,
        kind.points,
        load_weights(a),
        load_weights(b),
        data,
        TrainConfig(epochs=epochs, seed=seed),
        out,
        on_epoch_end=on_epoch_end,
        progress=False,
    )
    return out


def garipov_path(method, a, b, curve, data):
    """The registered method's path, built as `lowloss connect` builds it."""
    network, path, _, _ = method_path(method, a, b, data, curve=curve)
    return network, path


def test_training_lowers_the_worst_point_loss_of_the_linear_initialisation(digits_endpoints, digits, tmp_path):
    a, b = digits_endpoints(256, 0), digits_endpoints(256, 1)
    model, fitted = garipov_path("garipov-polychain-3", a, b, fit(tmp_path, a, b, digits, epochs=10), digits)
    theta_a, theta_b = fitted.theta_a, fitted.theta_b
    initial = Path(chain([theta_a, *start_bends([Leg(theta_a, theta_b)], 3), theta_b]))
    worst = {
        name: evaluate_path(model, path, digits, points=11, splits=("train",), progress=False)["loss"].max()
        for name, path in (("fitted", fitted), ("initial", initial))
    }
    assert worst["fitted"] < worst["initial"], worst


def test_interrupted_fit_resumes_to_the_same_curve(digits_endpoints, digits, tmp_path):
    a, b = digits_endpoints(256, 0), digits_endpoints(256, 1)
    whole = fit(tmp_path, a, b, digits, name="whole")

    def stop(epoch, row):
        if epoch == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(tmp_path, a, b, digits, name="resumed", on_epoch_end=stop)
    resumed = tmp_path / "resumed.safetensors"
    assert not resumed.exists() and checkpoint_path(resumed).exists()
    fit(tmp_path, a, b, digits, name="resumed")
    assert_same_params(load_file(whole), load_file(resumed))
    assert [row["epoch"] for row in load_weights(resumed).meta["history"]] == [1, 2, 3, 4]
    assert not checkpoint_path(resumed).exists()
    assert not torch.equal(
        load_file(whole)["bend1/fc1.weight"],
        load_file(fit(tmp_path, a, b, digits, seed=1, name="other"))["bend1/fc1.weight"],
    )


@pytest.mark.parametrize("arch,options", [("onehidden", {"width": 16}), ("conv2fc1", {"channels": [4, 8]})])
def test_every_method_works_unchanged_for_any_architecture(arch, options, digits, tmp_path):
    ends = []
    for seed in (0, 1):
        ends.append(tmp_path / f"{arch}-{seed}.safetensors")
        train_endpoint(arch, options, digits, TrainConfig(epochs=1, seed=seed), ends[-1], progress=False)
    for method in GARIPOV:
        curve = fit(tmp_path, *ends, digits, method=method, epochs=1, name=method)
        model, path = garipov_path(method, *ends, curve, digits)
        assert_same_params(path.legs[0].at([0.0]), {k: v[None] for k, v in path.theta_a.items()})
        assert_same_params(path.legs[-1].at([1.0]), {k: v[None] for k, v in path.theta_b.items()})
        table = evaluate_path(model, path, digits, points=3, splits=("test",), progress=False)
        assert table["loss"].notna().all()
        assert table["acc"].iloc[0] == pytest.approx(load_weights(ends[0]).meta["test_acc"])


# --- bad input --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_pair(tmp_path_factory, digits):
    folder = tmp_path_factory.mktemp("pair")
    ends = [folder / f"s{seed}.safetensors" for seed in (0, 1, 2)]
    for seed, out in enumerate(ends):
        train_endpoint("onehidden", {"width": 16}, digits, TrainConfig(epochs=1, seed=seed), out, progress=False)
    curve = fit(folder, ends[0], ends[1], digits, epochs=1)
    return ends, curve


def test_curve_of_other_endpoints_or_other_method_is_refused(small_pair, digits):
    (a, b, c), curve = small_pair
    with pytest.raises(LowlossError, match=f"{curve}: fitted on other endpoints"):
        garipov_path("garipov-polychain-3", a, c, curve, digits)
    with pytest.raises(LowlossError, match=f"{curve}: is a polychain curve with 3 points"):
        garipov_path("garipov-bezier-3", a, b, curve, digits)
    with pytest.raises(LowlossError, match="not a Garipov curve .* it is a trained model"):
        garipov_path("garipov-polychain-3", a, b, a, digits)


def test_curve_with_foreign_tensors_is_refused(small_pair, digits, tmp_path):
    (a, b, _), curve = small_pair
    artifact = load_weights(curve)
    broken = tmp_path / "broken.safetensors"
    save_weights(broken, {"bend1/fc1.weight": artifact.tensors["bend1/fc1.weight"]}, artifact.meta)
    with pytest.raises(LowlossError, match="bends do not fit"):
        garipov_path("garipov-polychain-3", a, b, broken, digits)


def test_fit_curve_cli_writes_the_curve_and_its_sidecar(small_pair, tmp_path):
    (a, b, _), _ = small_pair
    out = tmp_path / "bezier.safetensors"
    result = run_cli(
        "fit-curve", a, b, "--method", "garipov-bezier-3", "--epochs", "2", "--out", out, "--no-progress", check=True
    )
    meta = json.loads(out.with_suffix(".json").read_text())
    assert (meta["kind"], meta["curve"], meta["points"], meta["epochs"]) == ("curve", "bezier", 3, 2)
    assert meta["endpoints"] == [load_weights(a).meta["sha256"], load_weights(b).meta["sha256"]]
    assert [row["epoch"] for row in meta["history"]] == [1, 2]
    assert sorted(load_file(out)) == ["bend1/fc1.bias", "bend1/fc1.weight", "bend1/fc2.bias", "bend1/fc2.weight"]
    assert json.loads(result.stdout.splitlines()[-1])["method"] == "garipov-bezier-3"


@pytest.mark.parametrize(
    "args,fragment",
    [
        (["--method", "garipov-spline-3"], "invalid choice: 'garipov-spline-3'"),
        (["--method", "garipov-bezier-5"], "invalid choice: 'garipov-bezier-5'"),
        (["--dataset", "synthetic-mnist"], "dataset 'synthetic-mnist' has [1, 28, 28]"),
    ],
)
def test_fit_curve_errors_are_one_line(small_pair, tmp_path, args, fragment):
    (a, b, _), _ = small_pair
    out = tmp_path / "x.safetensors"
    assert_one_line_error(run_cli("fit-curve", a, b, "--epochs", "1", "--out", out, *args), fragment)
    assert not out.exists()


def test_connect_cli_evaluates_a_fitted_curve(small_pair, tmp_path):
    (a, b, _), curve = small_pair
    out = tmp_path / "path.csv"
    result = run_cli(
        "connect",
        a,
        b,
        "--method",
        "garipov-polychain-3",
        "--curve",
        curve,
        "--points",
        "3",
        "--out",
        out,
        "--no-progress",
        check=True,
    )
    summary = json.loads(result.stdout.splitlines()[-1])
    assert (summary["method"], summary["legs"], summary["points"]) == ("garipov-polychain-3", 2, 6)
    assert summary["worst_test_acc"] <= summary["endpoint_test_acc"]
    assert out.exists()


@pytest.mark.parametrize(
    "method,other_end,fragment",
    [
        ("garipov-polychain-3", True, "fitted on other endpoints"),
        ("garipov-polychain-5", False, "is a polychain curve with 3 points"),
    ],
)
def test_connect_cli_refuses_a_curve_that_does_not_fit(small_pair, tmp_path, method, other_end, fragment):
    (a, b, c), curve = small_pair
    out = tmp_path / "path.csv"
    result = run_cli("connect", a, c if other_end else b, "--method", method, "--curve", curve, "--out", out)
    assert_one_line_error(result, f"{curve}: {fragment}")
    assert not out.exists()
