"""Weight adjustment (eq. 9–10): the least-squares solve, and outputs kept where the net is overparameterised."""

import numpy as np
import pytest
import torch
from torch.func import functional_call

from lowloss.connect.adjust import solve_adjustment, with_ones
from lowloss.connect.path import Leg
from lowloss.connect.registry import Context, get_method
from lowloss.errors import LowlossError
from lowloss.models import build_model
from tests.test_interpolate import random_params


def features_with_dead_units(n: int, m: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    f = torch.relu(torch.randn(n, m, generator=gen))
    f[:, :3] = 0  # dead ReLU units: zero columns make FᵀF singular
    return f


@pytest.mark.parametrize("n,m", [(300, 40), (30, 80)])
def test_solve_matches_the_pseudo_inverse_residual(n, m):
    f = features_with_dead_units(n, m)
    y = torch.randn(n, 4, generator=torch.Generator().manual_seed(1))
    design = with_ones(f, True)
    w = solve_adjustment(lambda rows: design[rows], y, m + 1, batch=64)
    reference = np.linalg.pinv(design.numpy()) @ y.double().numpy()
    residual = (design @ w - y.double()).norm()
    reference_residual = np.linalg.norm(design.numpy() @ reference - y.double().numpy())
    assert residual <= reference_residual * (1 + 1e-6) + 1e-8
    if n < m:  # underdetermined: the minimum-norm solution, as eq. (10)'s pseudo-inverse gives
        torch.testing.assert_close(w, torch.from_numpy(reference), atol=1e-6, rtol=1e-6)


def test_batched_accumulation_does_not_change_the_solution():
    f = features_with_dead_units(500, 30)
    y = torch.randn(500, 3, generator=torch.Generator().manual_seed(2))
    design = with_ones(f, True)
    whole = solve_adjustment(lambda rows: design[rows], y, 31, batch=10_000)
    torch.testing.assert_close(solve_adjustment(lambda rows: design[rows], y, 31, batch=7), whole)


def network_outputs(model, params, x):
    with torch.no_grad():
        return functional_call(model, params, (x,))


@pytest.mark.parametrize("name", ["linear+wa", "arc+wa", "ot+wa"])
def test_overparameterised_adjusted_points_reproduce_network_a(name, digits):
    """Width 96 ≥ 64 samples: every adjusted breakpoint computes Ŷ^A on them (Fig. 5, left)."""
    model = build_model("onehidden", (1, 8, 8), 10, {"width": 96}).eval()
    theta_a, theta_b = random_params(0, 96), random_params(1, 96)
    samples = 64
    ctx = Context(model, model.spec(), digits, {"wa_breakpoints": 4, "wa_samples": samples, "seed": 5})
    path = get_method(name).build(theta_a, theta_b, ctx)
    gen = torch.Generator().manual_seed(5)
    x = digits.x_train[torch.randperm(len(digits.x_train), generator=gen)[:samples]]
    target = network_outputs(model, theta_a, x)
    adjusted = [leg for leg in path.legs if leg.name.startswith("wa-")]
    assert len(adjusted) == 5
    for leg in adjusted[:-1]:
        torch.testing.assert_close(network_outputs(model, leg.end, x), target, atol=2e-3, rtol=1e-3)
    first = adjusted[0]  # Θ^A -> P(0): only the output layer moves, between two exact fits
    for t in (0.3, 0.7):
        point = {k: v[0] for k, v in first.at([t]).items()}
        torch.testing.assert_close(network_outputs(model, point, x), target, atol=2e-3, rtol=1e-3)


def test_bad_wa_options_are_errors(digits):
    model = build_model("onehidden", (1, 8, 8), 10, {"width": 8})
    theta_a, theta_b = random_params(0, 8), random_params(1, 8)
    for options, message in [({"wa_breakpoints": 1}, "at least 2"), ({"wa_samples": 10**6}, "between 1 and")]:
        with pytest.raises(LowlossError, match=message):
            get_method("linear+wa").build(theta_a, theta_b, Context(model, model.spec(), digits, options))


def test_first_layer_follows_its_method_and_the_output_layer_is_refitted(digits):
    model = build_model("onehidden", (1, 8, 8), 10, {"width": 8})
    theta_a, theta_b = random_params(0, 8), random_params(1, 8)
    ctx = Context(model, model.spec(), digits, {"wa_breakpoints": 3})
    path = get_method("linear+wa").build(theta_a, theta_b, ctx)
    middle = path.legs[1].end  # P(0.5)
    expected = Leg(theta_a, theta_b).at([0.5])
    assert torch.equal(middle["fc1.weight"], expected["fc1.weight"][0])
    assert not torch.allclose(middle["fc2.weight"], expected["fc2.weight"][0])
