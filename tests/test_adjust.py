"""Weight adjustment (eq. 9–10, §4.1's W^AB): the least-squares solve, conv layers as their dense
equivalent on patches, and outputs kept wherever the network is overparameterised."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lowloss.errors import LowlossError
from lowloss.evaluate.layered import LayerOutputs
from lowloss.methods.adjust import LeastSquares, fit_layers, solve_rows
from lowloss.methods.context import ALL, Options
from lowloss.methods.layerwise import Route, adjust_points, readers_inputs
from lowloss.methods.registry import get_method
from lowloss.nets.network import INPUT, after, before
from lowloss.paths.legs import Leg
from tests.conftest import context, network_of, random_params


def features_with_dead_units(n: int, m: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    f = torch.relu(torch.randn(n, m, generator=gen))
    f[:, :3] = 0  # dead ReLU units: zero columns make FᵀF singular
    return f


def with_ones(f: torch.Tensor) -> torch.Tensor:
    return torch.cat([f, torch.ones(len(f), 1)], 1).double()


@pytest.mark.parametrize("n,m", [(300, 40), (30, 80)])
def test_solve_matches_the_pseudo_inverse_residual(n, m):
    f = features_with_dead_units(n, m)
    y = torch.randn(n, 4, generator=torch.Generator().manual_seed(1))
    w = solve_rows(lambda rows: f[rows], y, bias=True, batch=64)
    design = with_ones(f)
    reference = np.linalg.pinv(design.numpy()) @ y.double().numpy()
    residual = (design @ w - y.double()).norm()
    reference_residual = np.linalg.norm(design.numpy() @ reference - y.double().numpy())
    assert residual <= reference_residual * (1 + 1e-6) + 1e-8
    if n < m:  # underdetermined: the minimum-norm solution, as eq. (10)'s pseudo-inverse gives
        torch.testing.assert_close(w, torch.from_numpy(reference), atol=1e-6, rtol=1e-6)


def test_an_underdetermined_problem_keeps_its_rows_and_no_gram_matrix_until_it_has_enough():
    """Fewer rows than unknowns need only F Fᵀ (the minimum norm): FᵀF is not accumulated until the rows outnumber
    the columns, and then from every row so far."""
    f = features_with_dead_units(90, 40)
    y = torch.randn(90, 2, generator=torch.Generator().manual_seed(3))
    problem = LeastSquares(bias=True)
    for start in range(0, 30, 10):
        problem.add(f[start : start + 10], y[start : start + 10])
    assert problem.gram is None and problem.rows == 30
    for start in range(30, 90, 10):
        problem.add(f[start : start + 10], y[start : start + 10])
    assert problem.kept is None
    torch.testing.assert_close(problem.gram, with_ones(f).T @ with_ones(f))
    torch.testing.assert_close(problem.solve(), solve_rows(lambda rows: f[rows], y, bias=True, batch=90))


def test_batched_accumulation_does_not_change_the_solution():
    f = features_with_dead_units(500, 30)
    y = torch.randn(500, 3, generator=torch.Generator().manual_seed(2))
    whole = solve_rows(lambda rows: f[rows], y, bias=True, batch=10_000)
    torch.testing.assert_close(solve_rows(lambda rows: f[rows], y, bias=True, batch=7), whole)


def test_conv_adjustment_equals_its_dense_equivalent_on_patches():
    """A conv layer re-fitted by least squares is the dense layer fitted on its input patches."""
    network = network_of("conv2fc1", {"channels": [4, 6]})
    conv = network.layer("conv2")
    gen = torch.Generator().manual_seed(0)
    inputs = torch.relu(torch.randn(40, 4, 5, 5, generator=gen))
    targets = torch.randn(40, 6, 5, 5, generator=gen)
    (fitted,) = fit_layers([conv], inputs, lambda start: [inputs], lambda start: [targets], batch=len(inputs))
    # the dense equivalent: every 5x5 patch of the zero-padded input (padding 2) as one sample row
    padded = F.pad(inputs, (2, 2, 2, 2))
    patches = torch.stack([padded[:, :, i : i + 5, j : j + 5].flatten(1) for i in range(5) for j in range(5)], 1)
    rows = patches.flatten(0, 1)  # (sample, position) rows, channel-major like the weight
    dense = solve_rows(lambda r: rows[r], targets.flatten(2).transpose(1, 2).flatten(0, 1), bias=True)
    torch.testing.assert_close(fitted["conv2.weight"].double(), dense[:-1].T.reshape(6, 4, 5, 5), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(fitted["conv2.bias"].double(), dense[-1], rtol=1e-4, atol=1e-5)


OVERPARAMETERISED = [("onehidden", {"width": 96}), ("fc3", {"widths": [48, 40]}), ("conv2fc1", {"channels": [8, 24]})]
SAMPLES = 16  # ≤ every adjusted layer's features: 8 x 25 + 1 patch entries against 16 x 9 conv rows, 24 + 1 against 16


def fitting_inputs(digits, samples: int = SAMPLES, seed: int = 5) -> torch.Tensor:
    """The inputs `--wa-samples samples --seed seed` fits on."""
    gen = torch.Generator().manual_seed(seed)
    return digits.x_train[torch.randperm(len(digits.x_train), generator=gen)[:samples]]


@pytest.mark.parametrize("arch,options", OVERPARAMETERISED)
def test_overparameterised_route_points_reproduce_network_a(arch, options, digits):
    """Fig. 5, left: with more features than samples every Θ_k^AB computes Ŷ^A on the fitting samples."""
    network = network_of(arch, options)
    theta_a, theta_b = random_params(0, arch=arch, options=options), random_params(1, arch=arch, options=options)
    x = fitting_inputs(digits)
    target = network.run(theta_a, x)
    points = Route("linear+wa", theta_a, theta_b, context(network, digits, wa_samples=SAMPLES, seed=5)).points
    assert len(points) == len(network.layers)
    for k, point in enumerate(points[1:], start=1):
        b_layers = {key for layer in network.layers[:k] for key in layer.keys}
        assert all(torch.equal(point[key], theta_b[key]) for key in b_layers)
        torch.testing.assert_close(network.run(point, x), target, atol=2e-3, rtol=1e-3)


@pytest.mark.parametrize("arch,options", OVERPARAMETERISED)
@pytest.mark.parametrize("name", ["linear+wa", "arc+wa", "ot+wa"])
def test_overparameterised_adjusted_points_reproduce_network_a(name, arch, options, digits):
    """Every adjusted breakpoint of every stage computes Ŷ^A on the fitting samples, and so does every point
    of the leg from Θ_k^AB to the first of them (only the re-fitted layer moves, between two exact fits)."""
    network = network_of(arch, options)
    theta_a, theta_b = random_params(0, arch=arch, options=options), random_params(1, arch=arch, options=options)
    ctx = context(network, digits, wa_breakpoints=4, wa_samples=SAMPLES, seed=5)
    path = get_method(name).build(theta_a, theta_b, ctx)
    x = fitting_inputs(digits)
    target = network.run(theta_a, x)
    adjusted = [leg for leg in path.legs if "-wa-" in leg.name]
    assert len(adjusted) == 4 * len(network.spec.groups)
    for leg in adjusted:
        torch.testing.assert_close(network.run(leg.end, x), target, atol=2e-3, rtol=1e-3)
    for leg in adjusted[::4]:
        point = {k: v[0] for k, v in leg.at([0.4]).items()}
        torch.testing.assert_close(network.run(point, x), target, atol=2e-3, rtol=1e-3)


@pytest.mark.parametrize("arch,options", OVERPARAMETERISED[1:])
def test_adjusting_at_every_evaluated_t_reproduces_network_a_there(arch, options, digits):
    """`--wa-breakpoints all`: the re-fit happens at whatever t is evaluated, so every such point is exact."""
    network = network_of(arch, options)
    theta_a, theta_b = random_params(0, arch=arch, options=options), random_params(1, arch=arch, options=options)
    ctx = context(network, digits, wa_breakpoints=ALL, wa_samples=SAMPLES, seed=5)
    path = get_method("arc+wa").build(theta_a, theta_b, ctx)
    x = fitting_inputs(digits)
    target = network.run(theta_a, x)
    everywhere = [leg for leg in path.legs if leg.name.endswith("-wa-all")]
    assert len(everywhere) == len(network.spec.groups)
    for leg in everywhere:
        stacked = leg.at([0.0, 0.25, 0.6, 1.0])
        for i in range(4):
            torch.testing.assert_close(
                network.run({k: v[i] for k, v in stacked.items()}, x), target, atol=2e-3, rtol=1e-3
            )


@pytest.mark.parametrize("arch", ["fc3", "conv2fc1"])
def test_readers_inputs_mix_the_stages_first_layer_from_its_basis(arch, digits):
    """Points of a straight leg of a stage run the stage's first layer twice per batch, whatever their number, and
    feed the readers what each point's own forward pass would."""
    network = network_of(arch)
    theta_a, theta_b = random_params(0, arch=arch), random_params(1, arch=arch)
    stage = network.stages[1]
    moved = {**theta_a, **{key: theta_b[key] for key in stage.keys}}
    points = [{k: v[i] for k, v in Leg(theta_a, moved).at(torch.linspace(0, 1, 6)).items()} for i in range(6)]
    layer = next(layer for layer in network.layers if before(layer) == stage.entry)
    calls = []
    hook = layer.module.register_forward_hook(lambda *_: calls.append(1))
    try:
        mixed = readers_inputs(network, stage, points, digits.x_train[:32], 32, LayerOutputs(network))(0)
    finally:
        hook.remove()
    assert len(calls) == 2
    for point, inputs in zip(points, mixed):
        own = network.run(point, digits.x_train[:32], INPUT, before(stage.readers[0]))
        torch.testing.assert_close(inputs, own, rtol=1e-4, atol=1e-5)


def test_the_stage_prefix_runs_once_and_cuts_compose(digits):
    network = network_of("fc3")
    theta = random_params(0, arch="fc3")
    x = digits.x_train[:32]
    fc2 = network.layer("fc2")
    middle = network.run(theta, network.run(theta, x, INPUT, before(fc2)), before(fc2), after(fc2))
    torch.testing.assert_close(network.run(theta, x, INPUT, after(fc2)), middle)


@pytest.mark.parametrize("value", [0, 1, -3, "some"])
def test_bad_breakpoints_are_errors(value):
    with pytest.raises(LowlossError, match="--wa-breakpoints must be an integer of at least 2 or 'all'"):
        Options(wa_breakpoints=value)


def test_too_many_fitting_samples_is_an_error(digits):
    network = network_of(width=8)
    with pytest.raises(LowlossError, match="between 1 and"):
        get_method("linear+wa").build(
            random_params(0, 8), random_params(1, 8), context(network, digits, wa_samples=10**6)
        )


def test_first_layer_follows_its_method_and_the_output_layer_is_refitted(digits):
    network = network_of(width=8)
    theta_a, theta_b = random_params(0, 8), random_params(1, 8)
    path = get_method("linear+wa").build(theta_a, theta_b, context(network, digits, wa_breakpoints=3))
    middle = path.legs[1].end  # P(0.5)
    expected = Leg(theta_a, theta_b).at([0.5])
    assert torch.equal(middle["fc1.weight"], expected["fc1.weight"][0])
    assert not torch.allclose(middle["fc2.weight"], expected["fc2.weight"][0])


def test_a_routes_fits_run_each_first_layer_once_per_parameter_set(digits):
    """Θ^A's outputs, which every fit reproduces, and a route point's features are kept across the route's fits:
    fc1 runs on the fitting samples once for Θ^A, once for Θ^B and once for B' (Θ^B matched), whatever the number of
    fits (two per stage). Every point is what fitting it alone gives."""
    network = network_of("fc3")
    theta_a, theta_b = random_params(0, arch="fc3"), random_params(1, arch="fc3")
    ctx = context(network, digits, wa_samples=64, seed=5)
    rows = []
    hook = network.layer("fc1").module.register_forward_hook(lambda _, inputs, __: rows.append(len(inputs[0])))
    try:
        path = get_method("ot+wa").build(theta_a, theta_b, ctx)
    finally:
        hook.remove()
    assert sum(count for count in rows if count > 1) == 3 * 64  # one-sample calls size the batches
    route = Route("ot+wa", theta_a, theta_b, ctx)
    (alone,) = adjust_points(network, network.stages[0], [theta_a], route.reference, route.x)  # nothing kept before
    start = path.legs[0].end  # stage 1's first adjusted point: Θ^A's readers re-fitted at t = 0
    assert all(torch.equal(start[key], alone[key]) for key in start)
