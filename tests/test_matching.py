"""OT matching: it recovers a known permutation, both solvers agree, and a saved matching is checked."""

import pytest
import torch
from torch.func import functional_call

from lowloss.artifacts import Artifact, load_weights
from lowloss.connect.matching import find_matching, load_matching, ot_permutation, save_matching
from lowloss.errors import LowlossError
from lowloss.models import build_model
from lowloss.spec import permute
from tests.test_interpolate import random_params

WIDTH = 40


def onehidden():
    return build_model("onehidden", (1, 8, 8), 10, {"width": WIDTH}).eval()


def shuffled_copy(theta: dict, seed: int = 3, noise: float = 1e-3):
    """B = A with its units shuffled (and slightly perturbed), and the shuffle."""
    gen = torch.Generator().manual_seed(seed)
    spec = onehidden().spec()
    shuffle = torch.randperm(WIDTH, generator=gen)
    theta_b = permute(theta, spec, {"h1": shuffle})
    return {k: v + noise * torch.randn(v.shape, generator=gen) for k, v in theta_b.items()}, shuffle


@pytest.mark.parametrize("solver", ["emd", "scipy"])
def test_ot_recovers_a_known_permutation(solver):
    theta_a = random_params(0, WIDTH)
    theta_b, shuffle = shuffled_copy(theta_a)
    perm = find_matching(theta_a, theta_b, onehidden().spec(), solver)["h1"]
    assert torch.equal(shuffle[perm], torch.arange(WIDTH))  # B's unit perm[i] is A's unit i


def test_the_matched_network_computes_the_same_function_as_b():
    model = onehidden()
    theta_a, theta_b = random_params(0, WIDTH), random_params(1, WIDTH)
    perms = find_matching(theta_a, theta_b, model.spec())
    matched = permute(theta_b, model.spec(), perms)
    x = torch.randn(32, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(functional_call(model, matched, (x,)), functional_call(model, theta_b, (x,)))
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


def test_saved_matching_round_trips_and_refuses_other_endpoints(tmp_path):
    spec = onehidden().spec()
    theta_a, theta_b = random_params(0, WIDTH), random_params(1, WIDTH)
    perms = find_matching(theta_a, theta_b, spec)
    endpoints = (fake_endpoint("a", "aa"), fake_endpoint("b", "bb"))
    save_matching(tmp_path / "m.safetensors", perms, endpoints, "emd")
    saved = load_weights(tmp_path / "m.safetensors")
    assert torch.equal(load_matching(saved, endpoints, theta_b, spec)["h1"], perms["h1"])
    with pytest.raises(LowlossError, match="computed for other endpoints"):
        load_matching(saved, (endpoints[0], fake_endpoint("c", "cc")), theta_b, spec)
    broken = Artifact(saved.path, {"perm.h1": torch.zeros(WIDTH, dtype=torch.int64)}, saved.meta)
    with pytest.raises(LowlossError, match="not a permutation of 40 units"):
        load_matching(broken, endpoints, theta_b, spec)
