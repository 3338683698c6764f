"""REPAIR (`*+repair`): the identity at a leg's ends, the interpolated channel statistics in between, on
networks with and without normalisation layers, and the CLI's contract."""

import json

import pytest
import torch
from torch.func import functional_call

from lowloss.evaluate import evaluate_path
from lowloss.evaluate.repair import Repair, repair_sites
from lowloss.methods.registry import get_method
from lowloss.nets.batchnorm import BatchNormRefresh
from lowloss.paths.legs import Leg
from tests.conftest import assert_one_line_error, context, network_of, run_main
from tests.test_spec import randomised

CASES = [
    ("onehidden", None),
    ("fc3", None),
    ("conv2fc1", None),
    ("vgg16", None),
    ("resnet20", {"width_multiplier": 1 / 8, "norm": "batch"}),
    ("resnet20", {"width_multiplier": 1 / 8, "norm": "layer"}),
    ("resnet20", {"width_multiplier": 1 / 8, "norm": "none"}),
]


def random_ends(arch: str, options: dict | None) -> tuple:
    """Two differently initialised networks of `arch` (norm scales, shifts and running statistics random)."""
    ends = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        model = network_of(arch, options).model
        ends.append(
            {
                key: randomised(key, value.detach()) if "norm" in key else value.detach()
                for key, value in model.state_dict().items()
            }
        )
    return tuple(ends)


@pytest.mark.parametrize("arch,options", CASES)
def test_repair_is_the_identity_at_both_ends_and_interpolates_the_statistics_between(arch, options, few_digits):
    network = network_of(arch, options)
    start, end = random_ends(arch, options)
    leg = Leg(start, end, "linear")
    repair = Repair(network, few_digits.x_train, batches=2)
    ts = [0.0, 0.5, 1.0]
    repaired = repair(leg.at(ts), [leg] * 3, ts)
    for index, expected in ((0, start), (2, end)):
        assert all(torch.equal(repaired[key][index], expected[key]) for key in expected)
    midpoint = {key: value[1] for key, value in repaired.items()}
    start_stats, end_stats, got = repair.stats(start), repair.stats(end), repair.stats(midpoint)
    raw = repair.stats({key: value[1] for key, value in leg.at(ts).items()})
    modules = dict(network.model.named_modules())
    for site in repair.sites:
        shifted = modules[site].bias is not None  # a layer without a bias is only rescaled
        for moment in (0, 1) if shifted else (1,):
            target = (start_stats[site][moment] + end_stats[site][moment]) / 2
            torch.testing.assert_close(got[site][moment], target, rtol=1e-3, atol=1e-4)
    assert any(not torch.allclose(raw[site][1], got[site][1], rtol=1e-2) for site in repair.sites)


def test_sites_are_the_norm_layers_or_every_layer_but_the_output():
    assert repair_sites(network_of("fc3")) == ["fc1", "fc2"]
    assert repair_sites(network_of("conv2fc1")) == ["conv1", "conv2"]
    sites = repair_sites(network_of("resnet20", {"width_multiplier": 1 / 8, "norm": "batch"}))
    assert sites[0] == "norm1" and len(sites) == 21 and all("norm" in s or "shortcut.1" in s for s in sites)


def test_repair_after_recomputed_batchnorm_statistics_stays_the_identity_at_the_ends(few_digits):
    options = {"width_multiplier": 1 / 8, "norm": "batch"}
    network = network_of("resnet20", options)
    start, end = random_ends("resnet20", options)
    leg = Leg(start, end, "linear")
    refresh = BatchNormRefresh(network.model, few_digits.x_train, 1)
    repair = Repair(network, few_digits.x_train, 1, before=refresh)
    ts = [0.0, 0.5, 1.0]
    fixed = repair(refresh(leg.at(ts), [leg] * 3, ts), [leg] * 3, ts)
    refreshed = refresh(leg.at([0.0, 1.0]), [leg] * 2, [0.0, 1.0])
    for index, row in ((0, 0), (2, 1)):
        assert all(torch.equal(fixed[key][index], refreshed[key][row]) for key in refreshed)
    with torch.no_grad():
        logits = functional_call(network.model, {key: value[1] for key, value in fixed.items()}, (few_digits.x_test,))
    assert torch.isfinite(logits).all()


def test_connect_repair_keeps_the_endpoints_and_lifts_the_linear_midpoint(digits_endpoints, tmp_path, capsys):
    a, b = digits_endpoints(32, 0), digits_endpoints(32, 1)
    tables = {}
    for method in ("linear", "linear+repair"):
        out = tmp_path / f"{method}.csv"
        result = run_main(capsys, "connect", a, b, "--method", method, "--points", "5", "--out", out, "--no-progress")
        assert result.returncode == 0, result.stderr
        summary = json.loads(result.stdout.strip().splitlines()[-1])
        tables[method] = summary
    assert tables["linear+repair"]["method"] == "linear+repair" and tables["linear+repair"]["repair_samples"] == 1024
    for key in ("endpoint_train_acc", "endpoint_test_acc"):
        assert tables["linear+repair"][key] == tables["linear"][key]
    assert tables["linear+repair"]["worst_train_loss"] < tables["linear"]["worst_train_loss"]


def test_repair_options_refuse_bad_input_in_one_line(digits_endpoints, tmp_path, capsys):
    a, b = digits_endpoints(32, 0), digits_endpoints(32, 1)
    out = tmp_path / "p.csv"
    result = run_main(capsys, "connect", a, b, "--method", "linear", "--repair-batches", "2", "--out", out)
    assert_one_line_error(result, "--repair-batches applies to *+repair methods")
    result = run_main(capsys, "connect", a, b, "--method", "linaer+repair", "--out", out)
    assert_one_line_error(result, "unknown method 'linaer'", "linear")
    result = run_main(capsys, "connect", a, b, "--method", "linear+repair", "--bn-batches", "1", "--out", out)
    assert_one_line_error(result, "no BatchNorm layers")
    assert not out.exists()


@pytest.mark.parametrize("arch", ["onehidden", "fc3", "conv2fc1"])
def test_repaired_points_score_the_same_through_the_layered_engine_and_the_reference(arch, few_digits):
    network = network_of(arch)
    start, end = random_ends(arch, None)
    path = get_method("weight-matching").build(start, end, context(network, few_digits))
    repair = Repair(network, few_digits.x_train, batches=1)
    fast, reference = (
        evaluate_path(network, path, few_digits, points=3, progress=False, fast=fast, fixes=[repair])
        for fast in (True, False)
    )
    assert len(fast) > 6 and (fast["leg_name"] == reference["leg_name"]).all()
    torch.testing.assert_close(torch.tensor(fast["acc"].values), torch.tensor(reference["acc"].values))
    torch.testing.assert_close(
        torch.tensor(fast["loss"].values), torch.tensor(reference["loss"].values), rtol=1e-4, atol=1e-5
    )
