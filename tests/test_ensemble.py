"""WA-ensembles (§6): a model ensembled with itself or a permuted copy is the model, overparameterised
members reproduce themselves, WA(1) saved as a model is the ensemble, costs, the CLI and its errors."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from lowloss.ensemble.backbone import IND, Ensemble, independent, load_ensemble, split_layer, weight_adjusted
from lowloss.nets.network import INPUT, before
from lowloss.nets.spec import permute
from lowloss.storage.model_files import load_model
from lowloss.storage.weights import sidecar_path
from lowloss.training.config import TrainConfig
from lowloss.training.train import train_endpoint
from tests.conftest import SMALL, assert_one_line_error, copy_with_meta, network_of, random_params, run_main

FIT_SAMPLES = 300  # training digits the least squares are fitted on in the exactness tests
WIDTH = 24  # of the trained one-hidden models the command is tested on


def every_method(network) -> list[int | None]:
    """Ind (None) and every WA(n) the architecture allows."""
    return [None, *range(1, len(network.layers))]


def build(network, members, wa_layer, x) -> Ensemble:
    return independent(network, members) if wa_layer is None else weight_adjusted(network, members, wa_layer, x)


def permuted_copy(network, theta, seed: int):
    """θ with every hidden group's units shuffled: the same function."""
    gen = torch.Generator().manual_seed(seed)
    spec = network.spec
    return permute(
        theta, spec, {group: torch.randperm(spec.size(theta, group), generator=gen) for group in spec.groups}
    )


@pytest.mark.parametrize("copy", ["itself", "permuted"])
@pytest.mark.parametrize("arch", list(SMALL))
def test_an_ensemble_of_a_model_with_its_copy_predicts_what_the_model_predicts(arch, copy, digits):
    network = network_of(arch)
    theta = random_params(0, arch=arch)
    other = dict(theta) if copy == "itself" else permuted_copy(network, theta, 1)
    expected = F.softmax(network.run(theta, digits.x_test), -1).detach()
    for wa_layer in every_method(network):
        ensemble = build(network, [theta, other], wa_layer, digits.x_train[:FIT_SAMPLES])
        probs = ensemble.log_probs(digits.x_test).exp()
        torch.testing.assert_close(probs, expected, rtol=0, atol=2e-5, msg=f"{arch} {ensemble.method}")
        assert torch.equal(probs.argmax(-1), expected.argmax(-1)), (arch, ensemble.method)


def overparameterised_samples(network, index: int, theta, x) -> int:
    """The most samples whose least-squares rows at layer `index` stay fewer than its columns."""
    layer = network.layers[index]
    rows_per_sample = len(layer.rows(network.run(theta, x[:1], INPUT, before(layer))))
    columns = layer.module.weight[0].numel() + (layer.bias is not None)
    return (columns - 1) // rows_per_sample


@pytest.mark.parametrize("arch", list(SMALL))
def test_overparameterised_adjusted_members_reproduce_their_own_outputs_on_the_fitting_samples(arch, digits):
    network = network_of(arch)
    members = [random_params(seed, arch=arch) for seed in (0, 1, 2)]
    checked = 0
    for wa_layer in range(1, len(network.layers)):
        samples = overparameterised_samples(network, split_layer(network, wa_layer), members[0], digits.x_train)
        if samples < 2:  # a conv layer with more output positions than filter weights
            continue
        x = digits.x_train[:samples]
        ensemble = weight_adjusted(network, members, wa_layer, x)
        adjusted = ensemble.member_logits(x)
        for k, member in enumerate(members):
            own = network.run(member, x)
            torch.testing.assert_close(adjusted[k], own, rtol=1e-4, atol=1e-4, msg=f"{arch} WA({wa_layer}) {k}")
        checked += 1
    assert checked >= 1


def test_the_wa_layer_counts_from_the_last_layer():
    for arch in SMALL:
        network = network_of(arch)
        assert network.layers[split_layer(network, 1)] is network.layers[-1]
    vgg = network_of("vgg16")
    assert vgg.layers[split_layer(vgg, 14)].name == "conv3"  # the paper's WA(14): two shared layers


def test_costs_count_the_shared_backbone_once_and_every_head():
    network = network_of("fc3")  # 64 -> 12 -> 10 -> 10, no biases
    members = [random_params(seed, arch="fc3") for seed in range(3)]
    flops = {"fc1": 2 * 64 * 12, "fc2": 2 * 12 * 10, "fc3": 2 * 10 * 10}
    params = {"fc1": 64 * 12, "fc2": 12 * 10, "fc3": 10 * 10}
    x = torch.randn(200, 1, 8, 8)
    costs = {wa_layer: build(network, members, wa_layer, x).costs((1, 8, 8)) for wa_layer in (None, 1, 2)}
    assert costs[None] == {"flops": 3 * sum(flops.values()), "params": 3 * sum(params.values())}
    assert costs[1] == {"flops": sum(flops.values()), "params": sum(params.values())}  # one averaged network
    assert costs[2] == {
        "flops": flops["fc1"] + 3 * (flops["fc2"] + flops["fc3"]),
        "params": params["fc1"] + 3 * (params["fc2"] + params["fc3"]),
    }


def test_wa_averages_logits_only_for_the_last_layer_and_probabilities_otherwise():
    network = network_of("fc3")
    members = [random_params(seed, arch="fc3") for seed in range(3)]
    x = torch.randn(300, 1, 8, 8)
    logits = [network.run(member, x) for member in members]
    mixture = torch.stack([F.softmax(logit, -1) for logit in logits]).mean(0)
    torch.testing.assert_close(independent(network, members).log_probs(x).exp(), mixture)
    wa1 = weight_adjusted(network, members, 1, x)
    averaged = network.run(wa1.averaged(), x)
    torch.testing.assert_close(wa1.log_probs(x), F.log_softmax(averaged, -1), rtol=1e-5, atol=1e-5)
    wa2 = weight_adjusted(network, members, 2, x)
    heads = wa2.member_logits(x)
    torch.testing.assert_close(wa2.log_probs(x).exp(), torch.stack([F.softmax(h, -1) for h in heads]).mean(0))


# ---- the command ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def models(digits_endpoints):
    """Three trained width-24 one-hidden digits models."""
    return [digits_endpoints(WIDTH, seed, 5) for seed in (0, 1, 2)]


def ensemble_summary(capsys, *args) -> dict:
    result = run_main(capsys, "ensemble", *args)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_wa1_is_saved_as_one_model_with_the_predictions_of_the_unsaved_ensemble(models, digits, tmp_path, capsys):
    out = tmp_path / "wa1.safetensors"
    summary = ensemble_summary(capsys, *models, "--wa-layer", "1", "--out", out)
    model, artifact = load_model(out)  # an ordinary model file
    assert artifact.meta["kind"] == "model" and artifact.meta["test_acc"] == summary["wa_test_acc"]
    saved = F.softmax(model(digits.x_test), -1).detach()
    network = network_of(width=WIDTH)
    members = [load_model(path)[1].tensors for path in models]
    unsaved = weight_adjusted(network, members, 1, digits.x_train).log_probs(digits.x_test).exp()
    torch.testing.assert_close(saved, unsaved, rtol=0, atol=1e-5)
    assert torch.equal(saved.argmax(-1), unsaved.argmax(-1))
    accuracy = (saved.argmax(-1) == digits.y_test).double().mean().item()
    assert summary["wa_test_acc"] == pytest.approx(accuracy)
    assert summary["wa_flops"] == summary["single_flops"] and summary["wa_params"] == summary["single_params"]


def test_the_summary_reports_members_ind_and_wa_with_their_costs(models, digits, tmp_path, capsys):
    out = tmp_path / "ind.safetensors"
    summary = ensemble_summary(capsys, *models, "--independent", "--out", out)
    probs = torch.stack([F.softmax(load_model(path)[0](digits.x_test), -1) for path in models]).mean(0).detach()
    assert summary["method"] == IND and summary["size"] == 3
    assert summary["ind_test_acc"] == pytest.approx((probs.argmax(-1) == digits.y_test).double().mean().item())
    assert summary["ind_test_loss"] == pytest.approx(F.nll_loss(probs.log(), digits.y_test).item(), rel=1e-5)
    for member, path in zip(summary["members"], models):
        assert member["path"] == str(path)
        assert member["test_acc"] == pytest.approx(load_model(path)[1].meta["test_acc"])
    assert summary["single_test_acc"] == summary["members"][0]["test_acc"]
    assert summary["best_single_test_acc"] == max(member["test_acc"] for member in summary["members"])
    assert summary["ind_flops"] == 3 * summary["single_flops"] and summary["ind_params"] == 3 * summary["single_params"]
    ensemble, artifact = load_ensemble(out)
    assert artifact.meta["kind"] == "ensemble" and len(ensemble.heads) == 3 and not ensemble.shared
    as_member = run_main(capsys, "ensemble", out, models[0], "--independent", "--out", tmp_path / "again.safetensors")
    assert_one_line_error(
        as_member, "ind.safetensors: this is an ensemble (from `lowloss ensemble`), but a trained model"
    )


@pytest.fixture(scope="module")
def conv_models(tmp_path_factory, digits):
    folder = tmp_path_factory.mktemp("conv")
    paths = [folder / f"conv{seed}.safetensors" for seed in (0, 1)]
    for seed, path in enumerate(paths):
        train_endpoint("conv2fc1", {"channels": [6, 8]}, digits, TrainConfig(epochs=2, seed=seed), path, progress=False)
    return paths


def test_a_saved_conv_wa_ensemble_loads_and_predicts_like_the_unsaved_one(conv_models, digits, tmp_path, capsys):
    out = tmp_path / "wa2.safetensors"
    summary = ensemble_summary(capsys, *conv_models, "--wa-layer", "2", "--wa-samples", "400", "--out", out)
    assert summary["adjusted_layer"] == "conv2" and summary["wa_samples"] == 400
    assert summary["single_flops"] < summary["wa_flops"] < summary["ind_flops"]
    assert summary["single_params"] < summary["wa_params"] < summary["ind_params"]
    assert set(summary["members"][1]) >= {"adjusted_test_acc", "adjusted_train_loss"}
    ensemble, artifact = load_ensemble(out)
    assert artifact.meta["kind"] == "ensemble" and ensemble.cut == before("conv2")
    log_probs = ensemble.log_probs(digits.x_test)
    accuracy = (log_probs.argmax(-1) == digits.y_test).double().mean().item()
    assert summary["wa_test_acc"] == pytest.approx(accuracy)
    assert summary["wa_test_loss"] == pytest.approx(F.nll_loss(log_probs, digits.y_test).item(), rel=1e-5)
    shared = {key.removeprefix("shared.") for key in artifact.tensors if key.startswith("shared.")}
    assert shared == {"conv1.weight", "conv1.bias"}  # model 1's backbone, stored once


def test_bad_input_is_one_line_and_writes_nothing(models, odd_endpoints, tmp_path, capsys):
    narrow, fc3 = odd_endpoints
    other_data = copy_with_meta(models[1], tmp_path / "mnist.safetensors", dataset="mnist")
    out = tmp_path / "bad.safetensors"
    cases = [
        ((models[0], fc3, "--independent"), ("fc3.safetensors: arch 'fc3' differs", "must share architecture")),
        ((models[0], narrow, "--wa-layer", "1"), ("narrow.safetensors: arch_options {'width': 32} differs",)),
        ((models[0], other_data, "--independent"), ("mnist.safetensors: dataset 'mnist' differs",)),
        ((*models, "--wa-layer", "2"), ("--wa-layer 2 is out of range for OneHidden", "allow 1 (the last layer) to 1")),
        ((fc3, fc3, "--wa-layer", "0"), ("argument --wa-layer: must be at least 1, got 0",)),
        ((models[0], "--independent"), ("an ensemble needs at least two models, got 1",)),
        ((*models, "--independent", "--wa-layer", "1"), ("not allowed with argument",)),
        ((*models, "--wa-layer", "1", "--wa-samples", "0"), ("--wa-samples: must be at least 1, got 0",)),
    ]
    for args, fragments in cases:
        assert_one_line_error(run_main(capsys, "ensemble", *args, "--out", out), *fragments)
        assert not out.exists() and not sidecar_path(out).exists()
