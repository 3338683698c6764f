"""The layer-wise route through residual networks (§4.2): each stage switches a whole residual stage and re-fits
the convs that read its stream. Between a network and its own permuted copy every route point computes the
network's function and `ot+wa` recovers the planted permutation of every group; with BatchNorm the route fits
on the statistics the evaluation measures, so a path to a rescaled permuted copy keeps the endpoint's accuracy;
`lowloss match` and `connect` run it, and a matching fitted with other statistics is refused in one line."""

import json

import pandas as pd
import pytest
import torch
from torch.func import functional_call

from lowloss.evaluate import evaluate_path
from lowloss.methods.layerwise import Route, fitted
from lowloss.methods.registry import get_method
from lowloss.nets.batchnorm import BatchNormRefresh
from lowloss.paths.legs import Path
from lowloss.paths.swaps import SwapLeg
from tests.conftest import assert_one_line_error, context, network_of, planted, run_main
from tests.test_resnet import TINY
from tests.test_spec import randomised


@pytest.mark.parametrize("norm", ["none", "layer"])
@pytest.mark.parametrize("method", ["linear+wa", "ot+wa", "ot+bfly"])
def test_every_route_point_to_a_permuted_copy_computes_the_networks_function(norm, method, few_digits):
    network = network_of("resnet20", {**TINY, "norm": norm})
    torch.manual_seed(0)
    theta_a = {key: randomised(key, value.detach()) for key, value in network.model.state_dict().items()}
    theta_b, shuffles = planted(network, theta_a, seed=1)
    route = Route(method, theta_a, theta_b, context(network, few_digits))
    x = route.x
    with torch.no_grad():
        expected = functional_call(network.model, theta_a, (x,))
        scale = expected.abs().max()
        for point in [*route.points[1:], route.target]:  # Θ_2^AB … and the matched B'
            torch.testing.assert_close(
                functional_call(network.model, point, (x,)) / scale, expected / scale, rtol=0, atol=2e-4
            )
    if method.startswith("ot"):
        assert route.perms.keys() == shuffles.keys()
        for group, shuffle in shuffles.items():
            assert torch.equal(route.perms[group], shuffle.argsort()), group
    assert len(route.points) == (4 if method.endswith("+wa") else 3)  # Θ^A, then one point per stage boundary


def test_with_batchnorm_the_route_fits_on_measured_statistics_and_keeps_the_endpoints_accuracy(
    rescaled_resnet_copy, few_digits
):
    network, theta_a, theta_b = rescaled_resnet_copy  # one function, other scales and order
    ctx = context(network, few_digits, bn_batches=2, wa_breakpoints=3)
    assert fitted(ctx)["bn_batches"] == 2  # a matching records the statistics its route was fitted with
    path = get_method("ot+wa").build(theta_a, theta_b, ctx)
    route = Path([leg for leg in path if not isinstance(leg, SwapLeg)], "ot+wa")  # Θ^A to B': one function
    refresh = BatchNormRefresh(network.model, few_digits.x_train, batches=2)
    acc = evaluate_path(network, route, few_digits, points=3, splits=("test",), progress=False, fixes=[refresh])["acc"]
    assert acc.max() - acc.min() <= 1 / len(few_digits.y_test)


def test_match_and_connect_run_the_route_on_a_resnet_and_check_its_statistics(resnet_pair, tmp_path, capsys):
    matching, table = tmp_path / "m.safetensors", tmp_path / "p.csv"
    route = ("--dataset", "digits", "--wa-samples", "200", "--bn-batches", "2", "--no-progress")
    result = run_main(capsys, "match", *resnet_pair, "--method", "ot+wa", "--out", matching, *route)
    assert result.returncode == 0, result.stderr
    result = run_main(
        capsys,
        "connect",
        *resnet_pair,
        "--method",
        "ot+wa",
        "--matching",
        matching,
        "--points",
        "3",
        "--wa-breakpoints",
        "2",
        "--out",
        table,
        *route,
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["legs"] > 4 and summary["bn_samples"] == 256
    assert set(pd.read_csv(table)["stage"]) == {1, 2, 3, 4}  # three residual stages, then the last layer and swaps
    result = run_main(
        capsys,
        "connect",
        *resnet_pair,
        "--method",
        "ot+wa",
        "--matching",
        matching,
        "--out",
        tmp_path / "other.csv",
        *route[:-3],
        "--no-progress",
    )
    assert_one_line_error(result, "m.safetensors: matching was computed with", "'bn_batches': 2", "uses {")
    assert not (tmp_path / "other.csv").exists()
    result = run_main(capsys, "match", *resnet_pair, "--method", "ot", "--bn-batches", "2", "--out", tmp_path / "o.st")
    assert_one_line_error(result, "--bn-batches applies to the route methods' matchings, not to 'ot'")
    assert not (tmp_path / "o.st").exists()
