"""OT matching: it recovers planted permutations of every group, both solvers agree, and a saved matching is
checked against its method, endpoints and fit."""

import pytest
import torch

from lowloss.errors import LowlossError
from lowloss.methods.matching import load_matching, ot_permutation, save_matching, sequential_matching
from lowloss.methods.registry import get_method
from lowloss.nets.spec import permute
from lowloss.storage.weights import Artifact, load_weights
from tests.conftest import context, network_of, random_params

WIDTH = 40


def shuffled_copy(theta: dict, network, seed: int = 3, noise: float = 1e-3):
    """B = A with the units of every group shuffled (and slightly perturbed), and the shuffles."""
    gen = torch.Generator().manual_seed(seed)
    spec = network.spec
    shuffles = {group: torch.randperm(spec.size(theta, group), generator=gen) for group in spec.groups}
    theta_b = permute(theta, spec, shuffles)
    return {k: v + noise * torch.randn(v.shape, generator=gen) for k, v in theta_b.items()}, shuffles


def assert_recovered(perms: dict, shuffles: dict) -> None:
    """perm[i] is B's unit that A's unit i became."""
    assert set(perms) == set(shuffles)
    for group, perm in perms.items():
        assert torch.equal(shuffles[group][perm], torch.arange(len(perm))), group


@pytest.mark.parametrize("solver", ["emd", "scipy"])
def test_ot_recovers_a_known_permutation(solver):
    network = network_of(width=WIDTH)
    theta_a = random_params(0, WIDTH)
    theta_b, shuffles = shuffled_copy(theta_a, network)
    assert_recovered(sequential_matching(theta_a, theta_b, network.spec, solver), shuffles)


@pytest.mark.parametrize("arch", ["fc3", "conv2fc1", "vgg16"])
@pytest.mark.parametrize("method", ["ot", "ot+wa", "ot+bfly"])
def test_a_planted_permutation_of_every_group_is_recovered(arch, method, digits):
    """Matched group after group in B's partly permuted basis (`ot`), or stage by stage between route points
    whose inputs are already in B's basis (`ot+wa`, `ot+bfly`)."""
    network = network_of(arch, {"widths": [24, 16]} if arch == "fc3" else None)
    theta_a = random_params(0, arch=arch, options={"widths": [24, 16]} if arch == "fc3" else None)
    theta_b, shuffles = shuffled_copy(theta_a, network, noise=0.0)
    perms, fitted = get_method(method).match(theta_a, theta_b, context(network, digits, wa_samples=512))
    assert_recovered(perms, shuffles)
    assert fitted == (None if method == "ot" else {"dataset": "digits", "wa_samples": 512, "seed": 0})


def test_the_matched_network_computes_the_same_function_as_b():
    network = network_of(width=WIDTH)
    theta_a, theta_b = random_params(0, WIDTH), random_params(1, WIDTH)
    perms = sequential_matching(theta_a, theta_b, network.spec)
    x = torch.randn(32, 1, 8, 8)
    torch.testing.assert_close(network.run(permute(theta_b, network.spec, perms), x), network.run(theta_b, x))
    assert not torch.equal(perms["h1"], torch.arange(WIDTH))


def test_emd_and_the_assignment_solver_find_equally_cheap_matchings():
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(120, 30, generator=gen), torch.randn(120, 30, generator=gen)
    costs = [(x - y[ot_permutation(x, y, solver)]).square().sum() for solver in ("emd", "scipy")]
    torch.testing.assert_close(costs[0], costs[1])
    assert costs[0] < (x - y).square().sum()


def test_unknown_solver_and_unequal_sizes_are_errors():
    with pytest.raises(LowlossError, match="unknown OT solver 'sinkhorn'"):
        ot_permutation(torch.zeros(3, 2), torch.zeros(3, 2), "sinkhorn")
    with pytest.raises(LowlossError, match="sizes differ"):
        ot_permutation(torch.zeros(3, 2), torch.zeros(4, 2))


def fake_endpoint(name: str, digest: str) -> Artifact:
    return Artifact(path=name, tensors={}, meta={"sha256": digest})


def test_saved_matching_round_trips_and_refuses_other_methods_endpoints_fits_and_networks(tmp_path):
    network = network_of(width=WIDTH)
    theta_a, theta_b = random_params(0, WIDTH), random_params(1, WIDTH)
    perms = sequential_matching(theta_a, theta_b, network.spec)
    endpoints = (fake_endpoint("a", "a" * 64), fake_endpoint("b", "b" * 64))
    fitted = {"dataset": "digits", "wa_samples": None, "seed": 0}
    save_matching(tmp_path / "m.safetensors", perms, "ot+wa", endpoints, "emd", fitted)
    saved = load_weights(tmp_path / "m.safetensors")
    ctx = context(network)
    ctx.endpoints = endpoints
    assert saved.meta["method"] == "ot+wa" and saved.meta["fitted"] == fitted
    assert torch.equal(load_matching(saved, "ot+wa", ctx, theta_b, fitted)["h1"], perms["h1"])
    with pytest.raises(LowlossError, match="computed for method 'ot\\+wa', not 'ot'"):
        load_matching(saved, "ot", ctx, theta_b, fitted)
    with pytest.raises(LowlossError, match="computed with .*'wa_samples': None.*this connection uses"):
        load_matching(saved, "ot+wa", ctx, theta_b, {**fitted, "wa_samples": 100})
    ctx.endpoints = (endpoints[0], fake_endpoint("c", "cc"))
    with pytest.raises(LowlossError, match="computed for other endpoints"):
        load_matching(saved, "ot+wa", ctx, theta_b, fitted)
    ctx.endpoints = endpoints
    broken = Artifact(saved.path, {"perm.h1": torch.zeros(WIDTH, dtype=torch.int64)}, saved.meta)
    with pytest.raises(LowlossError, match="not a permutation of 40 units"):
        load_matching(broken, "ot+wa", ctx, theta_b, fitted)
    deep = context(network_of("fc3"))
    deep.endpoints = endpoints
    with pytest.raises(LowlossError, match="matching covers groups \\['h1'\\], the network has \\['h1', 'h2'\\]"):
        load_matching(saved, "ot+wa", deep, random_params(1, arch="fc3"), fitted)
