"""Weight matching (Git Re-Basin): it recovers planted permutations of every group of every architecture,
stops at a fixed point that beats the identity, ignores BatchNorm's running statistics, and its matching file
records what it matched on and is checked by `connect`."""

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment

from lowloss.methods.registry import get_method
from lowloss.methods.weight_matching import MATCHED_ON, Scores, aligned_start, match_weights, weight_matching
from lowloss.methods.weight_matching import objective as matched_objective
from lowloss.nets.inference import infer_spec
from lowloss.nets.spec import permute
from lowloss.storage.weights import load_weights
from tests.conftest import assert_one_line_error, context, network_of, random_params, run_main
from tests.test_matching import assert_recovered, shuffled_copy
from tests.test_spec import randomised

ARCHITECTURES = [
    ("onehidden", {"width": 24}),
    ("fc3", {"widths": [24, 16]}),
    ("conv2fc1", {"channels": [6, 8]}),
    ("vgg16", {"width_multiplier": 1 / 32}),
    ("resnet20", {"width_multiplier": 1 / 4, "norm": "batch"}),
    ("resnet20", {"width_multiplier": 1 / 4, "norm": "layer"}),
    ("resnet20", {"width_multiplier": 1 / 4, "norm": "none"}),
]
IDS = [f"{arch}-{options.get('norm', '')}".rstrip("-") for arch, options in ARCHITECTURES]


def endpoint(arch: str, options: dict, seed: int) -> dict:
    """Freshly initialised weights with random biases, norm scales, shifts and running statistics."""
    return {key: randomised(key, value) for key, value in random_params(seed, arch=arch, options=options).items()}


def objective(theta_a: dict, theta_b: dict, spec) -> float:
    """Σ ⟨W_A, W_B⟩ over the tensors of the spec that carry a group: what weight matching maximises."""
    keys = [key for key, axes in spec.axes.items() if any(axes)]
    return sum(float((theta_a[key].double() * theta_b[key].double()).sum()) for key in keys)


@pytest.mark.parametrize("arch,options", ARCHITECTURES, ids=IDS)
@pytest.mark.parametrize("method", ["weight-matching", "ot"])
def test_a_planted_permutation_of_every_group_is_recovered(arch, options, method):
    network = network_of(arch, options)
    theta_a = endpoint(arch, options, 0)
    theta_b, shuffles = shuffled_copy(theta_a, network, noise=1e-3)
    perms, _ = get_method(method).match(theta_a, theta_b, context(network))
    assert_recovered(perms, shuffles)


@pytest.mark.parametrize("arch,options", ARCHITECTURES[3:5], ids=IDS[3:5])
def test_independent_networks_meet_at_a_fixed_point_that_beats_the_identity(arch, options):
    network = network_of(arch, options)
    ctx = context(network)
    spec = ctx.spec.trained()
    theta_a, theta_b = endpoint(arch, options, 0), endpoint(arch, options, 1)
    perms, sweeps = weight_matching(theta_a, theta_b, spec, seed=0)
    assert 1 < sweeps < 100
    at_fixed_point = Scores(theta_a, theta_b, spec, perms)
    for group in spec.groups:  # no group's own assignment can improve on its permutation any more
        scores = at_fixed_point.of(group)
        best = linear_sum_assignment(scores, maximize=True)[1]
        rows = np.arange(len(best))
        assert scores[rows, best].sum() <= scores[rows, perms[group].numpy()].sum() + 1e-9, group
    matched = permute(theta_b, network.spec, perms)
    assert objective(theta_a, matched, spec) > objective(theta_a, theta_b, spec)
    x = torch.randn(5, 1, 8, 8)
    torch.testing.assert_close(network.run(matched, x), network.run(theta_b, x), rtol=1e-4, atol=1e-5)
    again, _ = weight_matching(theta_a, theta_b, spec, seed=0)
    assert all(torch.equal(again[group], perms[group]) for group in perms)


@pytest.mark.parametrize("arch,options", [ARCHITECTURES[1], ARCHITECTURES[4]], ids=[IDS[1], IDS[4]])
def test_a_budget_of_sweeps_stops_the_descent_between_the_aligned_start_and_the_fixed_point(arch, options):
    network = network_of(arch, options)
    spec = context(network).spec.trained()
    theta_a, theta_b = endpoint(arch, options, 0), endpoint(arch, options, 1)
    start = aligned_start(theta_a, theta_b, spec)
    fixed, sweeps = weight_matching(theta_a, theta_b, spec, seed=0, start=start)
    assert sweeps >= 2  # at least one sweep improves on the start

    def reached(perms: dict) -> float:
        return matched_objective(theta_a, theta_b, spec, perms)

    budgeted = {n: match_weights(theta_a, theta_b, spec, sweeps=n) for n in (0, 1, 2)}
    assert all(torch.equal(budgeted[0][group], start[group]) for group in start)  # 0: the aligned start itself
    assert reached(start) < reached(budgeted[1]) <= reached(budgeted[2]) <= reached(fixed)
    unlimited = match_weights(theta_a, theta_b, spec)
    assert all(torch.equal(unlimited[group], fixed[group]) for group in fixed)
    matched = permute(theta_b, network.spec, budgeted[1])  # every budget is a permutation: the same function
    x = torch.randn(5, 1, 8, 8)
    torch.testing.assert_close(network.run(matched, x), network.run(theta_b, x), rtol=1e-4, atol=1e-5)


def test_batchnorm_running_statistics_do_not_enter_the_matching():
    arch, options = ARCHITECTURES[4]
    ctx = context(network_of(arch, options))
    theta_a, theta_b = endpoint(arch, options, 0), endpoint(arch, options, 1)
    restatted = {
        key: torch.rand_like(value) + 0.5 if key.endswith(("running_var", "running_mean")) else value
        for key, value in theta_b.items()
    }
    perms, settings = get_method("weight-matching").match(theta_a, theta_b, ctx)
    assert settings == {"matched_on": MATCHED_ON, "order_seed": 0}
    other, _ = get_method("weight-matching").match(theta_a, restatted, ctx)
    assert all(torch.equal(other[group], perms[group]) for group in perms)
    assert not any(key.startswith("layer1.0.norm1.running") for key in ctx.spec.trained().axes)


def test_the_matching_file_records_what_it_matched_on_and_connect_checks_it(digits_endpoints, tmp_path, capsys):
    a, b = digits_endpoints(16, 0), digits_endpoints(16, 1)
    matching = tmp_path / "wm.safetensors"
    result = run_main(capsys, "match", a, b, "--method", "weight-matching", "--out", matching)
    assert result.returncode == 0, result.stderr
    saved = load_weights(matching)
    assert saved.meta["method"] == "weight-matching"
    assert saved.meta["fitted"] == {"matched_on": MATCHED_ON, "order_seed": 0}
    out = tmp_path / "wm.csv"
    result = run_main(
        capsys,
        "connect",
        a,
        b,
        "--method",
        "weight-matching",
        "--matching",
        matching,
        "--points",
        "3",
        "--out",
        out,
        "--no-progress",
    )
    assert result.returncode == 0, result.stderr
    perm = saved.tensors["perm.h1"]
    swaps = 16 - len(cycles(perm.tolist()))  # a cycle of length c takes c - 1 swaps
    assert f'"legs": {1 + swaps}' in result.stdout
    other = tmp_path / "other.csv"
    result = run_main(
        capsys, "connect", a, b, "--method", "weight-matching", "--matching", matching, "--seed", "1", "--out", other
    )
    assert_one_line_error(result, "matching was computed with", "'order_seed': 0", "'order_seed': 1")
    assert not other.exists()

    # a budget of sweeps is recorded, and a matching made with another budget is refused
    budgeted = tmp_path / "wm0.safetensors"
    result = run_main(capsys, "match", a, b, "--method", "weight-matching", "--wm-sweeps", "0", "--out", budgeted)
    assert result.returncode == 0, result.stderr
    assert load_weights(budgeted).meta["fitted"] == {"matched_on": MATCHED_ON, "order_seed": 0, "sweeps": 0}
    result = run_main(capsys, "connect", a, b, "--method", "weight-matching", "--matching", budgeted, "--out", other)
    assert_one_line_error(result, "matching was computed with", "'sweeps': 0")
    assert not other.exists()


@pytest.mark.parametrize("command", ["match", "connect"])
def test_wm_sweeps_is_refused_for_another_method_and_below_zero(digits_endpoints, tmp_path, capsys, command):
    a, b = digits_endpoints(16, 0), digits_endpoints(16, 1)
    out = tmp_path / ("m.safetensors" if command == "match" else "p.csv")
    result = run_main(capsys, command, a, b, "--method", "ot", "--wm-sweeps", "0", "--out", out)
    assert_one_line_error(result, "--wm-sweeps applies to weight-matching", "method 'ot' does not read it")
    result = run_main(capsys, command, a, b, "--method", "weight-matching", "--wm-sweeps", "-1", "--out", out)
    assert_one_line_error(result, "argument --wm-sweeps: must be at least 0, got -1")
    assert not out.exists()


def cycles(perm: list[int]) -> list[list[int]]:
    """The cycles of a permutation (fixed points included)."""
    seen, found = set(), []
    for start in range(len(perm)):
        cycle = []
        while start not in seen:
            seen.add(start)
            cycle.append(start)
            start = perm[start]
        if cycle:
            found.append(cycle)
    return found


def test_with_one_hidden_group_weight_matching_is_the_papers_ot_matching():
    """‖x − y‖² = ‖x‖² + ‖y‖² − 2⟨x, y⟩ and the norms' sum is the same for every permutation: the cheapest OT plan
    between butterflies is the assignment of largest inner products, which one sweep of weight matching finds."""
    network = network_of("onehidden", {"width": 40})
    theta_a, theta_b = endpoint("onehidden", {"width": 40}, 0), endpoint("onehidden", {"width": 40}, 1)
    ot, _ = get_method("ot").match(theta_a, theta_b, context(network))
    matched, _ = get_method("weight-matching").match(theta_a, theta_b, context(network))
    assert torch.equal(ot["h1"], matched["h1"]) and not torch.equal(ot["h1"], torch.arange(40))


def test_corrected_score_matrices_equal_recomputed_ones():
    """A group's kept matrix, corrected by the entries each other group's new permutation moved, is the matrix a
    fresh computation at the same permutations gives."""
    arch, options = ARCHITECTURES[4]
    spec = network_of(arch, options).spec.trained()
    theta_a, theta_b = endpoint(arch, options, 0), endpoint(arch, options, 1)
    scores = Scores(theta_a, theta_b, spec)
    for group in spec.groups:
        scores.of(group)  # computed in full, then only corrected
    gen = torch.Generator().manual_seed(0)
    for group in spec.groups[::2]:
        scores.set(group, torch.randperm(len(scores.perms[group]), generator=gen))
    fresh = Scores(theta_a, theta_b, spec, scores.perms)
    for group in spec.groups:
        expected = fresh.of(group)
        np.testing.assert_allclose(scores.of(group), expected, atol=1e-5 * np.abs(expected).max(), err_msg=group)


class ResidualMLP(torch.nn.Module):
    """A residual stream with a square layer inside it: the stream's group is on both axes of `mix.weight`."""

    def __init__(self) -> None:
        super().__init__()
        self.inp, self.mix, self.out = torch.nn.Linear(12, 16), torch.nn.Linear(16, 16), torch.nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(x)
        return self.out(h + self.mix(torch.relu(h)))


def test_a_group_on_two_axes_of_one_tensor_only_takes_assignments_that_raise_the_objective():
    torch.manual_seed(0)
    model_a, model_b = ResidualMLP(), ResidualMLP()
    spec = infer_spec(model_a, torch.randn(2, 12)).trained()
    (group,) = spec.groups
    assert spec.axes["mix.weight"] == (group, group)
    theta_a, theta_b = model_a.state_dict(), model_b.state_dict()
    start = aligned_start(theta_a, theta_b, spec)
    perms, sweeps = weight_matching(theta_a, theta_b, spec, start=start)
    assert sweeps < 100  # a fixed point, not a cycle of assignments that only look better
    assert matched_objective(theta_a, theta_b, spec, perms) >= matched_objective(theta_a, theta_b, spec, start)
    planted = torch.randperm(16, generator=torch.Generator().manual_seed(1))
    shuffled = permute(theta_a, spec, {group: planted})
    recovered, _ = weight_matching(theta_a, shuffled, spec, start=aligned_start(theta_a, shuffled, spec))
    torch.testing.assert_close(permute(shuffled, spec, recovered), theta_a)
