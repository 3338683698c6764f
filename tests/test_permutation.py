"""The permutation stage: n − #cycles swap legs, each a permutation of Θ^B at its ends, built lazily."""

import math

import pytest
import torch
from torch.func import functional_call

from lowloss.methods.permutation import permutation_legs
from lowloss.nets.models import build_model
from lowloss.nets.spec import permute, unit_view
from lowloss.paths.swaps import SwapLeg, permutation_stage
from tests.conftest import random_params


def cycles(perm: torch.Tensor) -> int:
    seen, count = set(), 0
    for start in range(len(perm)):
        if start not in seen:
            count += 1
            while start not in seen:
                seen.add(start)
                start = int(perm[start])
    return count


def outputs(model, params, x):
    with torch.no_grad():
        return functional_call(model, params, (x,))


@pytest.mark.parametrize("seed", [0, 1])
def test_stage_has_one_leg_per_swap_and_ends_exactly_at_b(seed):
    model = build_model("onehidden", (1, 8, 8), 10, {"width": 30}).eval()
    spec, theta_b = model.spec(), random_params(seed, 30)
    perm = torch.randperm(30, generator=torch.Generator().manual_seed(seed))
    stage = permutation_stage(theta_b, spec, "h1", perm)
    legs = stage.legs()
    assert len(legs) == 30 - cycles(perm)
    assert len(stage.checkpoints) <= math.isqrt(30) + 2  # orders kept at every √L-th step only
    matched = permute(theta_b, spec, {"h1": perm})
    assert all(torch.equal(legs[0].start[k], matched[k]) for k in theta_b)
    assert legs[-1].end is theta_b
    for a, b in zip(legs, legs[1:]):
        assert all(torch.equal(a.end[k], b.start[k]) for k in theta_b)


def test_every_swap_leg_moves_two_units_and_its_ends_compute_b():
    model = build_model("onehidden", (1, 8, 8), 10, {"width": 12}).eval()
    spec, theta_b = model.spec(), random_params(0, 12)
    legs = permutation_legs(theta_b, spec, {"h1": torch.randperm(12, generator=torch.Generator().manual_seed(1))})
    x = torch.randn(16, 1, 8, 8)
    expected = outputs(model, theta_b, x)
    for leg in legs:
        assert isinstance(leg, SwapLeg) and leg.eval_ts == (0.5,)
        torch.testing.assert_close(outputs(model, leg.start, x), expected)
        torch.testing.assert_close(outputs(model, leg.end, x), expected)
        start, end = (unit_view(p["fc1.weight"], 0, 12) for p in (leg.start, leg.end))
        moved = (start != end).any(1).nonzero().flatten().tolist()
        assert moved == sorted(leg.swaps.positions[leg.step].tolist())
        u, v = leg.units
        assert sorted(torch.equal(start[i], theta_b["fc1.weight"][u]) for i in moved) == [False, True]


def test_stages_of_several_groups_chain_to_b_and_keep_the_function():
    options = {"widths": [10, 7]}
    model = build_model("fc3", (1, 8, 8), 10, options).eval()
    spec, theta_b = model.spec(), random_params(2, arch="fc3", options=options)
    gen = torch.Generator().manual_seed(0)
    perms = {"h1": torch.randperm(10, generator=gen), "h2": torch.randperm(7, generator=gen)}
    legs = permutation_legs(theta_b, spec, perms)
    assert len(legs) == 10 - cycles(perms["h1"]) + 7 - cycles(perms["h2"])
    assert all(torch.equal(legs[0].start[k], permute(theta_b, spec, perms)[k]) for k in theta_b)
    assert all(torch.equal(legs[-1].end[k], theta_b[k]) for k in theta_b)
    x = torch.randn(8, 1, 8, 8)
    for a, b in zip(legs, legs[1:]):
        assert all(torch.equal(a.end[k], b.start[k]) for k in theta_b)
        torch.testing.assert_close(outputs(model, b.start, x), outputs(model, theta_b, x))


def test_identity_matching_needs_no_swap():
    model = build_model("onehidden", (1, 8, 8), 10, {"width": 5})
    assert permutation_legs(random_params(0, 5), model.spec(), {"h1": torch.arange(5)}) == []
