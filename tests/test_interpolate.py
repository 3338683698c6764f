"""Linear, arc and the generalised arc: the formulas, Proposition 1, and exact endpoints of every method
on every architecture."""

import math

import pytest
import torch

from lowloss.evaluate.layered import LayeredEngine
from lowloss.methods.interpolate import UnitCurve, arc_leg, generalised_arc, unit_partition, units_leg
from lowloss.methods.neurons import butterflies
from lowloss.methods.registry import METHODS, get_method
from lowloss.paths.legs import Leg, Path
from tests.conftest import SMALL, context, network_of, random_params

WITHOUT_FILES = [name for name, method in METHODS.items() if not method.needs]


def assert_path_joins(path: Path, theta_a: dict, theta_b: dict) -> None:
    """A path starts at Θ^A and ends at Θ^B bit for bit, and every leg starts where the previous ended."""
    for key in theta_a:
        assert torch.equal(path.theta_a[key], theta_a[key]), key
        assert torch.equal(path.theta_b[key], theta_b[key]), key
        assert torch.equal(path.legs[0].at([0.0])[key][0], theta_a[key]), key
        assert torch.equal(path.legs[-1].at([1.0])[key][0], theta_b[key]), key
    assert path.is_continuous()
    for leg in path.legs[:3] + path.legs[-2:]:
        ends = leg.at([0.0, 1.0])
        assert all(torch.equal(ends[k][0], leg.start[k]) and torch.equal(ends[k][1], leg.end[k]) for k in theta_a)


def test_generalised_arc_maps_each_endpoint_once_and_the_mix_back_once():
    x, y = torch.randn(5, 3), torch.randn(5, 3)
    calls = {"forward": 0, "inverse": 0}

    def forward(v):
        calls["forward"] += 1
        return 2 * v + 1

    def inverse(z):
        calls["inverse"] += 1
        assert z.shape == (4 * 5, 3)
        return (z - 1) / 2

    t = torch.tensor([0.0, 0.3, 0.5, 1.0])
    out = generalised_arc(x, y, t, forward, inverse)
    assert out.shape == (4, 5, 3) and calls == {"forward": 2, "inverse": 1}
    torch.testing.assert_close(out[0], x)
    torch.testing.assert_close(out[-1], y)
    c, s = math.cos(0.15 * math.pi), math.sin(0.15 * math.pi)
    torch.testing.assert_close(out[1], (c * (2 * x + 1) + s * (2 * y + 1) - 1) / 2)


def test_proposition_1_arc_keeps_the_covariance_and_linear_shrinks_it():
    gen = torch.Generator().manual_seed(0)
    root = torch.tensor([[1.0, 0.0, 0.0], [0.5, 2.0, 0.0], [-0.3, 0.4, 0.7]], dtype=torch.float64)
    sigma = root @ root.T
    x = torch.randn(200_000, 3, generator=gen, dtype=torch.float64) @ root.T
    y = torch.randn(200_000, 3, generator=gen, dtype=torch.float64) @ root.T
    t = torch.tensor([0.25, 0.5, 0.75], dtype=torch.float64)
    arc = generalised_arc(x, y, t)
    for k, tk in enumerate(t.tolist()):
        linear = (1 - tk) * x + tk * y
        torch.testing.assert_close(arc[k].T.cov(), sigma, atol=0.05, rtol=0.03)
        torch.testing.assert_close(linear.T.cov(), ((1 - tk) ** 2 + tk**2) * sigma, atol=0.05, rtol=0.03)
    assert torch.linalg.det((0.5 * x + 0.5 * y).T.cov()) < 0.2 * torch.linalg.det(sigma)


def test_arc_follows_eq_6_around_the_pooled_mean_and_moves_the_output_bias_linearly():
    theta_a, theta_b = random_params(0), random_params(1)
    spec = network_of().spec
    x, y = butterflies(theta_a, spec, "h1"), butterflies(theta_b, spec, "h1")
    mu = torch.cat([x, y]).mean(0)
    t = 0.3
    point = {k: v[0] for k, v in arc_leg(theta_a, theta_b, spec).at([t]).items()}
    c, s = math.cos(math.pi * t / 2), math.sin(math.pi * t / 2)
    torch.testing.assert_close(butterflies(point, spec, "h1"), mu + c * (x - mu) + s * (y - mu))
    torch.testing.assert_close(point["fc2.bias"], (1 - t) * theta_a["fc2.bias"] + t * theta_b["fc2.bias"])


def test_deep_arc_moves_each_layers_rows_around_that_layers_own_mean():
    """§5.2: Linear and Arc connect the rows of W1, W2, W3 at once; the output layer moves with the last
    group's units (its rows are the classes), and every tensor belongs to exactly one group."""
    network = network_of("fc3")
    spec, theta_a, theta_b = network.spec, random_params(0, arch="fc3"), random_params(1, arch="fc3")
    parts = unit_partition(spec)
    assert [sorted(part.axes) for part, _ in parts] == [["fc1.weight"], ["fc2.weight", "fc3.weight"]]
    t = 0.6
    point = {k: v[0] for k, v in arc_leg(theta_a, theta_b, spec).at([t]).items()}
    c, s = math.cos(math.pi * t / 2), math.sin(math.pi * t / 2)
    for part, group in parts:
        x, y = butterflies(theta_a, part, group), butterflies(theta_b, part, group)
        mu = torch.cat([x, y]).mean(0)
        torch.testing.assert_close(butterflies(point, part, group), mu + c * (x - mu) + s * (y - mu))


def test_units_leg_is_exact_at_the_ends_even_when_the_curve_is_not():
    theta_a, theta_b = random_params(0), random_params(1)
    spec = network_of().spec
    leg = units_leg(theta_a, theta_b, [UnitCurve(spec, "h1", lambda t: torch.ones(len(t), 16, 64 + 1 + 10))], "ones")
    ends = leg.at([0.0, 0.5, 1.0])
    for key in theta_a:
        assert torch.equal(ends[key][0], theta_a[key]) and torch.equal(ends[key][2], theta_b[key])
    assert torch.equal(ends["fc1.weight"][1], torch.ones(16, 64))


def test_a_legs_function_is_never_called_at_its_ends():
    """A weight-adjusted leg's function fits least squares per point: its breakpoints, known, cost nothing."""
    theta_a, theta_b = random_params(0), random_params(1)
    asked = []

    def fn(t: torch.Tensor) -> dict:
        asked.extend(t.tolist())
        return {key: torch.full((len(t), *value.shape), 7.0) for key, value in theta_a.items()}

    leg = Leg(theta_a, theta_b, fn=fn)
    points = leg.at([0.0, 0.25, 1.0, 0.75, 0.0])
    assert asked == [0.25, 0.75]
    for key in theta_a:
        assert torch.equal(points[key][0], theta_a[key]) and torch.equal(points[key][4], theta_a[key])
        assert torch.equal(points[key][2], theta_b[key])
        assert (points[key][[1, 3]] == 7.0).all()
    asked.clear()
    assert all(torch.equal(leg.at([1.0])[key][0], theta_b[key]) for key in theta_a) and asked == []


@pytest.mark.parametrize("arch", list(SMALL))
@pytest.mark.parametrize("name", WITHOUT_FILES)
def test_every_method_starts_and_ends_exactly_at_the_endpoints(name, arch, digits):
    theta_a, theta_b = random_params(0, arch=arch), random_params(1, arch=arch)
    ctx = context(network_of(arch), digits, wa_breakpoints=3, wa_samples=64)
    path = get_method(name).build(theta_a, theta_b, ctx)
    assert path.method == name
    assert_path_joins(path, theta_a, theta_b)


def test_a_tensor_equal_at_both_ends_stays_itself_along_a_leg_and_the_evaluation_starts_after_it():
    """(1 - t) a + t a rounds away from a; a leg keeps what it does not move bit for bit, so the layered evaluation
    finds the first moving layer where the path actually starts to move (a weight-adjusted stage's later legs)."""
    network = network_of("fc3", {"widths": [16, 8]})
    theta_a = random_params(0, arch="fc3", options={"widths": [16, 8]})
    moved = random_params(1, arch="fc3", options={"widths": [16, 8]})
    second = network.layers[1]
    theta_b = {key: moved[key] if key in second.keys else value.clone() for key, value in theta_a.items()}
    ts = torch.linspace(0, 1, 7, dtype=torch.float64)
    points = Leg(theta_a, theta_b).at(ts)
    for key, value in theta_a.items():
        assert torch.equal(points[key], value.expand_as(points[key])) == (key not in second.keys), key
    plan = LayeredEngine(network, batched=False).plan_stacked(points)
    assert plan.span == (second, second)
