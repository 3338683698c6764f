"""Curves between aligned networks: zero epochs leave the initial path, the route start puts the bends on the ot+wa
path, connect runs on through the permutation stage, fitted seconds are recorded, bad options are one line."""

import json
from dataclasses import replace

import pandas as pd
import pytest
import torch

from lowloss.errors import LowlossError
from lowloss.methods.curves import curve_start, fit_method_curve
from lowloss.methods.matching import save_matching
from lowloss.methods.permutation import permutation_legs
from lowloss.methods.registry import CURVES, ROUTE_METHODS, get_method
from lowloss.nets.spec import permute
from lowloss.paths.legs import interpolate
from lowloss.paths.swaps import SwapLeg
from lowloss.storage.model_files import load_endpoints
from lowloss.storage.weights import load_weights
from lowloss.training.config import TrainConfig
from lowloss.training.train import train_endpoint
from tests.conftest import assert_one_line_error, context, method_path, network_of, run_cli

ALIGNED = [name for name, kind in CURVES.items() if kind.align is not None]


@pytest.fixture(scope="module")
def pairs(tmp_path_factory, digits):
    """{arch: (A, B, C)}: briefly trained digits endpoints of a one-hidden and a three-layer network."""
    folder = tmp_path_factory.mktemp("aligned")
    found = {}
    for arch, options in (("onehidden", {"width": 16}), ("fc3", {"widths": [12, 10]})):
        ends = []
        for seed in (0, 1, 2):
            ends.append(folder / f"{arch}-{seed}.safetensors")
            train_endpoint(arch, options, digits, TrainConfig(epochs=2, seed=seed), ends[-1], progress=False)
        found[arch] = tuple(ends)
    return found


def fitted(method, a, b, data, out, epochs=0, matching=None):
    fit_method_curve(
        method, load_weights(a), load_weights(b), data, TrainConfig(epochs=epochs), out, progress=False,
        matching=None if matching is None else load_weights(matching),
    )  # fmt: skip
    return out


def assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys() and all(torch.equal(a[key], b[key]) for key in a)


def test_the_curve_table_is_coherent():
    for name, kind in CURVES.items():
        assert kind.align is None or get_method(kind.align).matcher is not None, name
        assert kind.start in ("straight", "arc") or (kind.start in ROUTE_METHODS and kind.align is not None), name
    assert {"aligned-polychain-3", "ot+wa+polychain-3"} <= set(ALIGNED)


@pytest.mark.parametrize("arch", ["onehidden", "fc3"])
def test_an_aligned_curve_of_zero_epochs_is_its_initial_path_bit_for_bit(arch, pairs, digits, tmp_path):
    a, b, _ = pairs[arch]
    curve = fitted("aligned-polychain-3", a, b, digits, tmp_path / "curve.safetensors")
    network, path, artifact_a, artifact_b = method_path("aligned-polychain-3", a, b, digits, curve=curve)
    ctx = context(network, digits)
    perms, _ = get_method("ot+wa").match(artifact_a.tensors, artifact_b.tensors, ctx)
    matched_b = permute(artifact_b.tensors, network.spec, perms)
    midpoint = {key: value[0] for key, value in interpolate(artifact_a.tensors, matched_b, torch.tensor([0.5])).items()}
    for got, want in zip(path.breakpoints()[:3], [artifact_a.tensors, midpoint, matched_b]):
        assert_same(got, want)
    swaps = [leg for leg in path if isinstance(leg, SwapLeg)]
    expected = permutation_legs(artifact_b.tensors, network.spec, perms)
    assert [leg.units for leg in swaps] == [leg.units for leg in expected]
    assert len(path) == 2 + len(swaps) and path.is_continuous()
    assert_same(path.theta_b, artifact_b.tensors)


@pytest.mark.parametrize("arch", ["onehidden", "fc3"])
def test_the_route_started_curve_has_its_bends_on_the_ot_wa_path(arch, pairs, digits, tmp_path):
    """The ot+wa path itself (as `connect --method ot+wa` builds it, same matching file): its legs before the
    permutation stage, at the middle position, are the bend of ot+wa+polychain-3 at zero epochs."""
    a, b, _ = pairs[arch]
    _, route, artifact_a, artifact_b = method_path("ot+wa", a, b, digits)
    network = network_of(arch, {"width": 16} if arch == "onehidden" else {"widths": [12, 10]})
    ctx = context(network, digits)
    matching = tmp_path / "ot+wa.safetensors"
    perms, settings = get_method("ot+wa").match(artifact_a.tensors, artifact_b.tensors, ctx)
    save_matching(matching, perms, "ot+wa", (artifact_a, artifact_b), "emd", settings, seconds=1.5)
    curve = fitted("ot+wa+polychain-3", a, b, digits, tmp_path / "curve.safetensors", matching=matching)
    legs = [leg for leg in route if not isinstance(leg, SwapLeg)]
    index, t = divmod(len(legs) / 2, 1)
    on_route = {key: value[0] for key, value in legs[int(index)].at([t]).items()}
    _, path, _, _ = method_path("ot+wa+polychain-3", a, b, digits, curve=curve)
    assert_same(path.breakpoints()[1], on_route)
    assert_same(path.breakpoints()[2], route.legs[len(legs)].start)  # B', where the permutation stage starts
    assert load_weights(curve).meta["seconds"] >= 1.5  # the matching's seconds are part of the curve's


def test_training_an_aligned_curve_moves_its_bends_and_keeps_its_ends(pairs, digits, tmp_path):
    a, b, _ = pairs["onehidden"]
    still = load_weights(fitted("ot+wa+polychain-3", a, b, digits, tmp_path / "still.safetensors"))
    trained = load_weights(fitted("ot+wa+polychain-3", a, b, digits, tmp_path / "trained.safetensors", epochs=2))
    assert [row["epoch"] for row in trained.meta["history"]] == [1, 2]
    assert not torch.equal(still.tensors["bend1/fc1.weight"], trained.tensors["bend1/fc1.weight"])
    assert torch.equal(still.tensors["perm.h1"], trained.tensors["perm.h1"])
    assert trained.meta["seconds"] >= sum(row["seconds"] for row in trained.meta["history"])
    _, path, _, artifact_b = method_path("ot+wa+polychain-3", a, b, digits, curve=trained.path)
    assert_same(path.theta_b, artifact_b.tensors)


def test_curve_start_refuses_a_matching_for_a_curve_that_is_not_aligned(pairs, digits, tmp_path):
    a, b, _ = pairs["onehidden"]
    network, _, artifact_a, artifact_b = method_path("linear", a, b, digits)
    matching = tmp_path / "m.safetensors"
    save_matching(matching, {"h1": torch.arange(16)}, "ot+wa", (artifact_a, artifact_b), "emd")
    ctx = replace(context(network, digits), matching=load_weights(matching))
    with pytest.raises(LowlossError, match="--matching applies to aligned curves, not to 'garipov-polychain-3'"):
        curve_start("garipov-polychain-3", artifact_a.tensors, artifact_b.tensors, ctx)


def test_connect_refuses_an_aligned_curve_for_a_cold_method_and_back(pairs, digits, tmp_path):
    a, b, _ = pairs["onehidden"]
    aligned = fitted("aligned-polychain-3", a, b, digits, tmp_path / "aligned.safetensors")
    out = tmp_path / "path.csv"
    result = run_cli("connect", a, b, "--method", "garipov-polychain-3", "--curve", aligned, "--out", out)
    assert_one_line_error(result, "is a curve aligned by ot+wa and started on straight")
    result = run_cli("connect", a, b, "--method", "ot+wa+polychain-3", "--curve", aligned, "--out", out)
    assert_one_line_error(result, "needs one aligned by ot+wa and started on ot+wa")
    assert not out.exists()


def test_connect_records_the_seconds_of_the_curve_it_read(pairs, digits, tmp_path):
    a, b, _ = pairs["onehidden"]
    curve = fitted("aligned-polychain-3", a, b, digits, tmp_path / "curve.safetensors", epochs=1)
    out = tmp_path / "path.csv"
    result = run_cli("connect", a, b, "--method", "aligned-polychain-3", "--curve", curve, "--points", "3",
                     "--out", out, "--no-progress", check=True)  # fmt: skip
    summary = json.loads(result.stdout.splitlines()[-1])
    assert summary["fit_seconds"] == pytest.approx(load_weights(curve).meta["seconds"], abs=1e-3)
    assert summary["evaluate_seconds"] > 0 and summary["build_seconds"] >= 0
    table = pd.read_csv(out)
    assert (table["fit_seconds"] == summary["fit_seconds"]).all()


@pytest.mark.parametrize(
    "args,fragment",
    [
        (["--method", "ot+wa+polychain-3", "--epochs", "-1"], "argument --epochs: must be at least 0, got -1"),
        (
            ["--method", "aligned-polychain-3", "--wa-breakpoints", "1"],
            "argument --wa-breakpoints: must be at least 2, got 1",
        ),
        (["--method", "ot+wa+polychain-9"], "invalid choice: 'ot+wa+polychain-9'"),
        (["--method", "aligned-polychain-3", "--wa-samples", "0"], "argument --wa-samples: must be at least 1"),
        (["--method", "garipov-polychain-3", "--matching", "MATCHING"], "--matching applies to aligned curves"),
        (["--method", "ot+wa+polychain-3", "--matching", "A"], "but an OT matching (from `lowloss match`) is expected"),
        (["--method", "aligned-polychain-3", "--ot-solver", "exact"], "argument --ot-solver: invalid choice: 'exact'"),
    ],
)
def test_fit_curve_refuses_bad_options_in_one_line(pairs, tmp_path, args, fragment):
    a, b, _ = pairs["onehidden"]
    matching = tmp_path / "m.safetensors"
    if "MATCHING" in args:
        _, artifact_a, artifact_b = load_endpoints(a, b)
        save_matching(matching, {"h1": torch.arange(16)}, "ot+wa", (artifact_a, artifact_b), "emd")
    args = [str(matching) if arg == "MATCHING" else str(a) if arg == "A" else arg for arg in args]
    out = tmp_path / "x.safetensors"
    assert_one_line_error(run_cli("fit-curve", a, b, "--out", out, "--no-progress", *args), fragment)
    assert not out.exists()
