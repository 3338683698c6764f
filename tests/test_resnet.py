"""resnet20 end to end: the generic engine evaluates a network with skips exactly, `linear`, `ot` and
`weight-matching` connect two trained endpoints through `lowloss connect`, the methods that need one hidden
layer refuse it in one line, and BatchNorm statistics recomputed at every point
keep a function-preserving path at its endpoint's accuracy."""

import json

import pandas as pd
import pytest
import torch
from torch.func import functional_call

from lowloss.evaluate import evaluate_path
from lowloss.evaluate.scores import mean_scores
from lowloss.methods.registry import get_method
from lowloss.nets.batchnorm import BatchNormRefresh
from lowloss.nets.network import Network
from lowloss.nets.topology import STAGED
from lowloss.paths.legs import Leg, Path
from lowloss.storage.model_files import load_model
from lowloss.training.train import evaluate_model
from tests.conftest import RESNET_PAIR_OPTIONS, assert_one_line_error, context, network_of, run_main
from tests.test_spec import randomised

TINY = {"width_multiplier": 1 / 8}


@pytest.mark.parametrize("norm", ["batch", "layer", "none"])
def test_the_generic_engine_equals_a_plain_forward_pass_at_every_point(norm, few_digits):
    options = {**TINY, "norm": norm}
    network = network_of("resnet20", options)
    assert not network.is_chain
    thetas = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        model = network_of("resnet20", options).model
        thetas.append({key: randomised(key, value.detach()) for key, value in model.state_dict().items()})
    table = evaluate_path(network, Path([Leg(*thetas, "linear")], "linear"), few_digits, points=3, progress=False)
    for t in (0.0, 0.5, 1.0):
        theta_t = {
            key: (1 - t) * a + t * thetas[1][key] if a.is_floating_point() else a for key, a in thetas[0].items()
        }
        with torch.no_grad():
            logits = functional_call(network.model, theta_t, (few_digits.x_test,))
        loss, acc = mean_scores([logits[None]], few_digits.y_test)
        row = table[(table["t"] == t) & (table["split"] == "test")].iloc[0]
        assert row["acc"] == pytest.approx(acc.item()) and row["loss"] == pytest.approx(loss.item(), rel=1e-4)


def test_linear_arc_ot_and_weight_matching_connect_two_resnets(resnet_pair, digits, tmp_path, capsys):
    endpoint_acc = [evaluate_model(load_model(path)[0], digits.x_test, digits.y_test)[1] for path in resnet_pair]
    for method in ("linear", "arc", "ot", "weight-matching"):
        out = tmp_path / f"{method}.csv"
        result = run_main(
            capsys, "connect", *resnet_pair, "--method", method, "--points", "3", "--out", out, "--no-progress"
        )
        assert result.returncode == 0, result.stderr
        summary = json.loads(result.stdout.strip().splitlines()[-1])
        table = pd.read_csv(out)
        test = table[table["split"] == "test"].sort_values("position")
        assert test["acc"].iloc[0] == pytest.approx(endpoint_acc[0]) and test["acc"].iloc[-1] == pytest.approx(
            endpoint_acc[1]
        )
        if method in ("linear", "arc"):
            assert summary["legs"] == 1 and "bn_samples" not in summary
            continue
        assert summary["legs"] > 1 and table[table["leg"] > 0]["leg_name"].str.startswith("swap-").all()
        matched_end = test[test["position"] == 1.0]["acc"].iloc[0]  # the matched Θ^B computes Θ^B's function
        assert matched_end == pytest.approx(endpoint_acc[1])
    result = run_main(
        capsys,
        "connect",
        *resnet_pair,
        "--method",
        "linear",
        "--points",
        "3",
        "--bn-batches",
        "2",
        "--out",
        tmp_path / "bn.csv",
        "--no-progress",
    )
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["bn_samples"] == 256 and (tmp_path / "bn.csv").exists()


@pytest.mark.parametrize("norm", ["batch", "layer", "none"])
def test_the_arc_moves_the_trained_tensors_and_batchnorm_statistics_go_straight(norm):
    options = {**TINY, "norm": norm}
    network = network_of("resnet20", options)
    thetas = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        model = network_of("resnet20", options).model
        thetas.append({key: randomised(key, value.detach()) for key, value in model.state_dict().items()})
    path = get_method("arc").build(*thetas, context(network))
    ends, mid = path.legs[0].at([0.0, 1.0]), {key: value[0] for key, value in path.legs[0].at([0.5]).items()}
    assert all(torch.equal(ends[key][i], theta[key]) for i, theta in enumerate(thetas) for key in theta)
    straight = {key: (a + thetas[1][key]) / 2 for key, a in thetas[0].items() if a.is_floating_point()}
    for key in straight:
        statistic = key.endswith(("running_mean", "running_var"))
        assert torch.allclose(mid[key], straight[key]) == statistic or key == "fc.bias", key
    if norm == "batch":
        assert all((mid[key] > 0).all() for key in mid if key.endswith("running_var"))


def test_methods_for_one_hidden_layer_or_no_batchnorm_refuse_a_resnet_in_one_line(resnet_pair, tmp_path, capsys):
    out = tmp_path / "p.csv"
    for method in ("iaf-flow", "realnvp-bijection"):
        result = run_main(capsys, "connect", *resnet_pair, "--method", method, "--out", out)
        assert_one_line_error(
            result, f"method '{method}' applies to networks with one hidden layer", "not to 'resnet20'"
        )
    result = run_main(
        capsys,
        "fit-curve",
        *resnet_pair,
        "--method",
        "garipov-polychain-3",
        "--epochs",
        "1",
        "--out",
        tmp_path / "c.safetensors",
    )
    assert_one_line_error(result, "Garipov curves through BatchNorm layers are not supported")
    assert not any(tmp_path.iterdir())


def test_a_trained_resnet_loads_with_its_norm_and_cuts_into_stages_but_not_layers(resnet_pair):
    model, artifact = load_model(resnet_pair[0])
    assert artifact.meta["arch_options"] == RESNET_PAIR_OPTIONS
    assert Network(model).topology == STAGED


def test_with_recomputed_statistics_the_path_to_a_permuted_copy_stays_at_the_endpoints_accuracy(
    rescaled_resnet_copy, few_digits
):
    network, theta_a, theta_b = rescaled_resnet_copy
    matched = get_method("weight-matching").build(theta_a, theta_b, context(network, few_digits))
    straight = Path(matched.legs[:1], "weight-matching")  # Θ^A to the matched copy: one function all along
    refresh = BatchNormRefresh(network.model, few_digits.x_train, batches=2)
    stale, fresh = (
        evaluate_path(network, straight, few_digits, points=5, splits=("test",), progress=False, fixes=fixes)["acc"]
        for fixes in ((), (refresh,))
    )
    assert fresh.max() - fresh.min() <= 1 / len(few_digits.y_test)
    assert fresh.min() > stale.min() + 0.05  # mixed running variances alone cost accuracy


def test_recomputing_statistics_of_a_network_without_batchnorm_is_one_line(digits_endpoints, tmp_path, capsys):
    a, b = digits_endpoints(16, 0), digits_endpoints(16, 1)
    out = tmp_path / "p.csv"
    result = run_main(capsys, "connect", a, b, "--method", "linear", "--bn-batches", "2", "--out", out)
    assert_one_line_error(result, "OneHidden has no BatchNorm layers: there are no running statistics to recompute")
    assert not out.exists()
