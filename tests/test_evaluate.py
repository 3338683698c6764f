"""The evaluation engine: batched points equal single points, and every strategy (one-hidden fast paths, the
layered engine, incremental swap legs) equals a full forward pass of every point."""

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lowloss.evaluate import endpoint_scores, engine, evaluate_path, evaluate_stacked, swaps, worst_points
from lowloss.evaluate.engine import Evaluator
from lowloss.evaluate.layered import KeptOutputs, LayeredEngine
from lowloss.evaluate.onehidden import OneHiddenForm
from lowloss.evaluate.scores import MEMORY_BUDGET, activation_elements, low_rank
from lowloss.evaluate.swaps import GroupCut, MarginBound, swap_scores
from lowloss.methods.interpolate import arc_leg
from lowloss.methods.permutation import permutation_legs
from lowloss.methods.registry import get_method
from lowloss.nets.network import Network
from lowloss.nets.params import stack_params, unstack_params
from lowloss.nets.spec import Spec, dense
from lowloss.paths.legs import Leg, Path, interpolate
from lowloss.paths.swaps import permutation_stage
from tests.conftest import context, network_of, random_params


def assert_same_tables(a: pd.DataFrame, b: pd.DataFrame) -> None:
    assert a[["leg", "leg_name", "stage", "t", "split"]].equals(b[["leg", "leg_name", "stage", "t", "split"]])
    torch.testing.assert_close(torch.tensor(a["loss"].values), torch.tensor(b["loss"].values), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(torch.tensor(a["acc"].values), torch.tensor(b["acc"].values))


def test_points_evaluated_together_equal_points_evaluated_alone(digits):
    network = network_of(width=20)
    leg = Leg(random_params(0, 20), random_params(1, 20))
    ts = [0.0, 0.2, 0.5, 1.0]
    x, y = digits.split("test")
    loss, acc = evaluate_stacked(network.model, leg.at(ts), x, y, batch=100)
    for i, t in enumerate(ts):
        loss_i, acc_i = evaluate_stacked(network.model, leg.at([t]), x, y, batch=len(x))
        torch.testing.assert_close(loss[i : i + 1], loss_i, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(acc[i : i + 1], acc_i)


@pytest.mark.parametrize("grid", [None, (0.0, 0.3, 1.0)])
def test_one_hidden_fast_paths_equal_a_full_forward_pass_on_every_leg(digits, grid):
    network = network_of(width=24)
    theta_a, theta_b = random_params(0, 24), random_params(1, 24)
    perm = torch.randperm(24, generator=torch.Generator().manual_seed(0))
    swaps = permutation_legs(theta_b, network.spec, {"h1": perm})
    if grid is not None:
        for leg in swaps:
            leg.eval_ts = grid
    path = Path([arc_leg(theta_a, swaps[0].start, network.spec), *swaps], "ot")
    assert OneHiddenForm.of(network, theta_b, digits.x_train[:64]) is not None
    incremental = evaluate_path(network, path, digits, points=5, progress=False)
    full = evaluate_path(network, path, digits, points=5, progress=False, fast=False)
    ends = 0 if grid else 1  # Θ^B is evaluated too when the last swap leg's grid lacks t = 1
    assert len(incremental) == 2 * (5 + len(swaps) * (len(grid) if grid else 1) + ends)
    assert_same_tables(incremental, full)


def test_one_hidden_fast_path_keeps_endpoints_beside_much_larger_points(digits):
    """A learned ν whose inverse overshoots makes points between the endpoints far larger than the endpoints:
    the first layer's low-rank factoring must not lose the small rows (the endpoints came out at 10 %)."""
    network = network_of(width=24)
    theta_a, theta_b = random_params(0, 24), random_params(1, 24)
    bulge = random_params(2, 24)

    def overshooting(t: torch.Tensor) -> dict:
        straight = interpolate(theta_a, theta_b, t)
        scale = (1e7 * torch.sin(torch.pi * t)).reshape(-1, 1, 1)
        straight["fc1.weight"] = straight["fc1.weight"] + scale.to(torch.float32) * bulge["fc1.weight"]
        return straight

    path = Path([Leg(theta_a, theta_b, "learned", overshooting)], "learned")
    fast = evaluate_path(network, path, digits, points=5, progress=False)
    full = evaluate_path(network, path, digits, points=5, progress=False, fast=False)
    assert_same_tables(fast, full)  # the endpoints' rows included


def with_few_swaps(path: Path, keep: int = 2) -> Path:
    """The path with only the first `keep` swap legs of each permutation stage (every strategy stays covered)."""
    legs, seen = [], {}
    for leg in path.legs:
        swaps = getattr(leg, "swaps", None)
        seen[id(swaps)] = seen.get(id(swaps), 0) + 1
        if swaps is None or seen[id(swaps)] <= keep:
            legs.append(leg)
    return Path(legs, path.method)


@pytest.mark.parametrize(
    "arch,method",
    [(arch, method) for arch in ("fc3", "conv2fc1") for method in ("arc", "ot+wa", "arc+bfly")]
    + [("vgg16", "ot+bfly")],
)
def test_the_layered_engine_equals_a_full_forward_pass(arch, method, few_digits):
    """Shared prefixes and suffixes, the low-rank first changing layer, and incremental swap legs of deep
    networks: every point's scores equal the generic vmapped evaluation of that point."""
    network = network_of(arch)
    theta_a, theta_b = random_params(0, arch=arch), random_params(1, arch=arch)
    path = with_few_swaps(get_method(method).build(theta_a, theta_b, context(network, few_digits, wa_breakpoints=2)))
    fast = evaluate_path(network, path, few_digits, points=3, progress=False)
    full = evaluate_path(network, path, few_digits, points=3, progress=False, fast=False)
    assert_same_tables(fast, full)
    if method != "arc":  # every stage of the route is there, WA's last stage too
        assert sorted(fast["stage"].unique()) == list(range(1, len(network.spec.groups) + 1 + method.endswith("wa")))


@pytest.mark.parametrize("arch,group", [("fc3", "h1"), ("fc3", "h2"), ("conv2fc1", "c1"), ("conv2fc1", "c2")])
def test_swap_legs_in_blocks_of_a_few_rows_equal_full_passes(arch, group, few_digits):
    """Every leg of a stage at t = 0, 0.3, 0.5 and 1, in blocks of a few samples on two single-threaded workers:
    a dense reader, the output layer, a conv reader and a dense one behind a flatten. Units 0 and 1 are dead
    (their inputs to the reader are always zero): their leg changes no sample and keeps the base's scores."""
    network = network_of(arch)
    theta = random_params(1, arch=arch)
    for key in network.spec.incoming(group):
        theta[key] = theta[key].clone()
        theta[key][:2] = 0
    n = network.spec.size(theta, group)
    perm = torch.cat([torch.tensor([1, 0]), 2 + torch.randperm(n - 2, generator=torch.Generator().manual_seed(0))])
    legs = permutation_stage(theta, network.spec, group, perm).legs()
    ts = [(0.0, 0.3, 0.5, 1.0)[i % 4] for i in range(len(legs))]
    units = torch.tensor([leg.units for leg in legs])
    cut = GroupCut.of(network, group, theta)
    x, y = few_digits.split("train")
    torch.set_num_threads(2)
    rows = 4 * 3 * cut.read(cut.between(cut.own(cut.prefix(x[:1])))).numel() * 5  # five rows per block
    fast = swap_scores(cut, units, torch.tensor(ts), x, y, batch=64, block_bytes=rows)
    assert torch.get_num_threads() == 2
    points = stack_params([unstack_params(leg.at([t]), 0) for leg, t in zip(legs, ts)])
    full = evaluate_stacked(network.model, points, x, y, batch=256)
    torch.testing.assert_close(fast[0], full[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(fast[1], full[1])
    dead = next(i for i, leg in enumerate(legs) if set(leg.units) == {0, 1})
    base = evaluate_stacked(network.model, {key: value[None] for key, value in theta.items()}, x, y, batch=256)
    torch.testing.assert_close((fast[0][dead], fast[1][dead]), (base[0][0], base[1][0]), rtol=1e-5, atol=1e-5)


def stage_of(arch: str, group: str, seed: int = 1):
    """A network, its base and the legs of a permutation stage of `group` at their midpoints, with the cut."""
    network = network_of(arch)
    theta = random_params(seed, arch=arch)
    perm = torch.randperm(network.spec.size(theta, group), generator=torch.Generator().manual_seed(0))
    legs = permutation_stage(theta, network.spec, group, perm).legs()
    units, t = torch.tensor([leg.units for leg in legs]), torch.full((len(legs),), 0.5)
    return network, theta, legs, units, t, GroupCut.of(network, group, theta)


@pytest.mark.parametrize("arch,group,kept", [("fc3", "h1", 0), ("fc3", "h2", None), ("conv2fc1", "c2", None)])
def test_screened_swap_legs_keep_every_accuracy_and_the_lowest_legs_loss(arch, group, kept, few_digits, monkeypatch):
    """A dense reader, the output layer, and the output layer behind ReLU, pooling and a flatten (at this input
    size a channel is one input of the reader): every leg's accuracy as the full evaluation gives it, the loss of
    the legs of the stage's lowest accuracy, none for the others (which can never be the worst point); alike
    whether the base's activations are kept between the two passes or (`kept` = 0 bytes) computed again."""
    if kept is not None:
        monkeypatch.setattr(swaps, "KEPT_BYTES", kept)
    *_, units, t, cut = stage_of(arch, group)
    x, y = few_digits.split("train")
    assert MarginBound.of(cut) is not None
    screened = swap_scores(cut, units, t, x, y, batch=64, screen=True)
    full = swap_scores(cut, units, t, x, y, batch=64)
    assert torch.equal(screened[1], full[1])
    lowest = full[1] == full[1].min()
    assert torch.equal(~screened[0].isnan(), lowest) and 0 < lowest.sum() < len(units)
    torch.testing.assert_close(screened[0][lowest], full[0][lowest])


def test_a_change_of_the_readers_output_within_a_samples_radius_keeps_its_class(few_digits):
    """The certificate: any change smaller than the radius keeps the class; for the output layer (no layer after
    it) the bound is tight: the radius is just under the distance to the nearest class's boundary, and a change 1 %
    beyond that distance, toward that class, flips the class."""
    x = few_digits.x_train[:256]
    for group in ("h1", "h2"):
        *_, cut = stage_of("fc3", group, seed=2)
        out = cut.read(cut.between(cut.own(cut.prefix(x))))
        logits = cut.suffix(out)
        bound = MarginBound.of(cut)
        radius = bound.radii(bound.slack(logits))
        assert (radius > 0).float().mean() > 0.9  # near-ties have none
        direction = torch.randn(out.shape, generator=torch.Generator().manual_seed(3))
        moved = out + direction / direction.norm(dim=1, keepdim=True) * radius[:, None]
        assert torch.equal(cut.suffix(moved).argmax(1), logits.argmax(1))
    top, predicted = logits.topk(2, dim=1)  # h2: the reader's output is the logits
    boundary = (top[:, 0] - top[:, 1]) / 2**0.5  # the distance to where the two classes tie
    spare = 1e-4 * (1 + logits.abs().max(1).values)  # the room kept for rounding
    assert (radius <= boundary).all() and (radius >= boundary - spare).all()
    toward = F.one_hot(predicted[:, 1], 10) - F.one_hot(predicted[:, 0], 10)
    beyond = logits + toward / 2**0.5 * (1.01 * boundary)[:, None]
    assert (beyond.argmax(1) != predicted[:, 0]).all()


@pytest.mark.parametrize("group", ["h1", "h2"])
def test_the_finer_test_certifies_more_pairs_and_only_pairs_that_keep_their_class(group, few_digits):
    """`MarginBound.keeps`, the second test of the pairs the radius leaves: every (leg, sample) pair it certifies keeps
    its class when run exactly, it certifies a share of the pairs the radius leaves, and where the reader makes the
    logits (h2: no ReLU after it, so the move is linear) it leaves only pairs within the spare of a class change."""
    x, y = few_digits.x_train[:128], few_digits.y_train[:128]
    *_, units, t, cut = stage_of("fc3", group, seed=2)
    bound = MarginBound.of(cut)
    assert bound.along is not None and (bound.spread is None) == (group == "h2")
    ref = swaps.Reference.of(cut, cut.own(cut.prefix(x)), y, bound)
    delta = ref.deltas(cut, units, t).flatten(2)  # (P, B, 2)
    columns = cut.columns[units]
    change = torch.einsum("pbk,pko->pbo", delta, columns)  # Δz of every pair, (P, B, out)
    moved = change.square().sum(2)
    leg, sample = (moved >= ref.radius.square()).nonzero(as_tuple=True)
    kept = bound.keeps(ref.slack[sample], units[leg], delta[leg, sample], moved[leg, sample])
    assert 0.1 < kept.float().mean() < 1
    logits = cut.suffix(ref.out[sample] + change[leg, sample])
    predicted = ref.slack[sample].argmax(1)
    assert torch.equal(logits[kept].argmax(1), predicted[kept])
    if group == "h2":
        spare = 1e-4 * (1 + ref.out[sample].abs().max(1).values)
        gap = logits.gather(1, predicted[:, None]) - logits
        gap[torch.arange(len(gap)), predicted] = torch.inf
        assert (gap[~kept].min(1).values < spare[~kept] * 1.001).all()


def test_swap_legs_of_a_conv_reader_are_not_screened(few_digits):
    """conv2fc1's c1, read by a conv layer (a unit's change is a whole map: no cheap quadratic form), and the
    layers after the reader hold a conv: its legs are evaluated in full, loss included."""
    *_, units, t, cut = stage_of("conv2fc1", "c1")
    assert MarginBound.of(cut) is None
    x, y = few_digits.split("train")
    screened = swap_scores(cut, units[:6], t[:6], x, y, batch=64, screen=True)
    assert not screened[0].isnan().any()
    torch.testing.assert_close(screened, swap_scores(cut, units[:6], t[:6], x, y, batch=64))


def test_a_screened_path_has_the_same_worst_points_and_loss_only_where_swap_legs_are_screened(few_digits):
    network = network_of("fc3")
    theta_a, theta_b = random_params(0, arch="fc3"), random_params(1, arch="fc3")
    path = get_method("ot").build(theta_a, theta_b, context(network, few_digits))
    full = evaluate_path(network, path, few_digits, points=3, progress=False)
    screened = evaluate_path(network, path, few_digits, points=3, progress=False, screen_swaps=True)
    assert screened["acc"].equals(full["acc"])
    for split, worst in worst_points(full).items():  # the same point; its loss up to rounding (other batches)
        assert worst_points(screened)[split] == {**worst, "loss": pytest.approx(worst["loss"], rel=1e-6)}
    unscored = screened["loss"].isna()
    assert unscored.sum() > len(screened) / 2 and screened.loc[unscored, "leg_name"].str.startswith("swap-").all()
    kept = torch.tensor(screened.loc[~unscored, "loss"].to_numpy())
    torch.testing.assert_close(kept, torch.tensor(full.loc[~unscored, "loss"].to_numpy()), rtol=1e-6, atol=1e-6)


def test_the_vmapped_engine_of_gpus_equals_the_loop_of_cpus(digits):
    network = network_of("conv2fc1")
    theta_a, theta_b = random_params(0, arch="conv2fc1"), random_params(1, arch="conv2fc1")
    stacked = arc_leg(theta_a, theta_b, network.spec).at([0.0, 0.3, 0.7, 1.0])
    x, y = digits.split("test")
    looped, vmapped = (LayeredEngine(network, batched) for batched in (False, True))
    for a, b in zip(
        looped.points(looped.plan_stacked(stacked), x, y, batch=128),
        vmapped.points(vmapped.plan_stacked(stacked), x, y, batch=128),
    ):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_a_straight_plan_equals_the_stacked_plan_of_the_same_points(digits):
    """plan_straight never stacks the layers that stay still; it must give what stacking every point gives."""
    network = network_of("fc3")
    theta_a = random_params(0, arch="fc3")
    theta_b = {
        **theta_a,
        **{key: value for key, value in random_params(1, arch="fc3").items() if key.startswith(("fc2", "fc3"))},
    }
    ts = [0.0, 0.25, 0.5, 1.0]
    engine = LayeredEngine(network, batched=False)
    straight = engine.plan_straight(theta_a, theta_b, ts)
    assert straight.span == (network.layers[1], network.layers[2])
    x, y = digits.split("test")
    stacked = engine.plan_stacked(interpolate(theta_a, theta_b, torch.tensor(ts, dtype=torch.float64)))
    for a, b in zip(engine.points(straight, x, y, batch=128), engine.points(stacked, x, y, batch=128)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


class CenteredHidden(nn.Module):
    """A one-hidden network whose hidden layer is centred across units: the units are not independent, so
    swap legs cannot be updated unit by unit."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(64, 12), nn.Linear(12, 10)

    def forward(self, x):
        h = F.relu(self.fc1(x.flatten(1)))
        return self.fc2(h - h.mean(1, keepdim=True))

    @staticmethod
    def spec() -> Spec:
        return Spec({**dense("fc1", None, "h1"), **dense("fc2", "h1", None)})


def test_swap_legs_of_a_network_with_dependent_units_fall_back_to_full_passes(digits):
    torch.manual_seed(0)
    network = Network(CenteredHidden().eval())
    theta_b = {k: v.detach() for k, v in network.model.state_dict().items()}
    swaps = permutation_legs(theta_b, network.spec, {"h1": torch.roll(torch.arange(12), 1)})
    assert OneHiddenForm.of(network, theta_b, digits.x_train[:64]) is None
    fast = evaluate_path(network, Path(swaps, "ot"), digits, progress=False)
    full = evaluate_path(network, Path(swaps, "ot"), digits, progress=False, fast=False)
    assert_same_tables(fast, full)


def test_tables_hold_both_endpoints_evaluated_like_the_path(digits):
    network = network_of(width=12)
    theta_a, theta_b = random_params(0, 12), random_params(1, 12)
    path = get_method("ot").build(theta_a, theta_b, context(network))
    path.method = "ot"
    table = evaluate_path(network, path, digits, points=3, progress=False)
    ends = endpoint_scores(table)
    for split in ("train", "test"):
        x, y = digits.split(split)
        for key, theta in (("a", theta_a), ("b", theta_b)):
            _, acc = evaluate_stacked(network.model, {k: v[None] for k, v in theta.items()}, x, y, batch=len(x))
            assert ends[split][key] == pytest.approx(acc.item())
    assert table["position"].max() == len(path)


def test_low_rank_bases_are_rows_of_their_own():
    """A leg's points factor over some of the points themselves, the first among them, with the identity as their
    coefficients: a point of the basis is evaluated as itself."""
    torch.manual_seed(0)
    a, b, c = torch.randn(3, 500)
    t = torch.linspace(0, 1, 11)[:, None]
    for rows, rank in (((1 - t) * a + t * b, 2), (torch.cos(t) * a + torch.sin(t) * b + t**2 * c, 3)):
        coeffs, basis = low_rank(rows)
        assert basis.shape == (rank, 500) and torch.equal(basis[0], rows[0])
        picked = [next(i for i, row in enumerate(rows) if torch.equal(row, base)) for base in basis]
        assert torch.equal(coeffs[picked], torch.eye(rank))
        torch.testing.assert_close(coeffs @ basis, rows, rtol=1e-5, atol=1e-5)
    rows = torch.randn(4, 500)
    coeffs, basis = low_rank(rows)
    assert torch.equal(coeffs, torch.eye(4)) and torch.equal(basis, rows)


def test_a_legs_ends_lead_the_basis_of_its_inner_points_where_they_span_them():
    torch.manual_seed(0)
    a, b = torch.randn(2, 500)
    t = torch.linspace(0.1, 0.9, 5)[:, None]
    inner = (1 - t) * a + t * b
    coeffs, basis = low_rank(torch.cat([a[None], b[None], inner]), lead=2)
    assert coeffs.shape == (5, 2) and torch.equal(basis, torch.stack([a, b]))
    torch.testing.assert_close(coeffs, torch.cat([1 - t, t], 1), rtol=1e-5, atol=1e-6)
    elsewhere = torch.randn(1, 500)  # an end off the points' line: the points keep a basis of their own
    coeffs, basis = low_rank(torch.cat([elsewhere, inner]), lead=1)
    assert coeffs.shape == (5, 2) and torch.equal(basis[0], inner[0])
    torch.testing.assert_close(coeffs @ basis, inner, rtol=1e-5, atol=1e-5)


def test_kept_outputs_are_computed_once_within_their_budget():
    x = torch.randn(10, 3)
    weight = torch.randn(4, 3)
    computed: list[int] = []

    def compute(start: int, weight: torch.Tensor = weight) -> torch.Tensor:
        computed.append(start)
        return x[start : start + 4] @ weight.T

    kept = KeptOutputs(budget=10 * 4 * 4 + weight.numel() * 4)  # one output over the split, with its weight
    first = kept.get("fc:out", [weight], x, 4, compute)
    assert computed == [0, 4, 8]
    again = kept.get("fc:out", [weight.clone()], x, 4, compute)  # equal tensors: kept
    assert computed == [0, 4, 8] and all(torch.equal(first(s), again(s)) for s in (0, 4, 8))
    torch.testing.assert_close(torch.cat([again(s) for s in (0, 4, 8)]), x @ weight.T)
    other = weight + 1
    kept.get("fc:out", [other], x, 4, lambda start: compute(start, other))  # another point: computed, the first out
    kept.get("fc:out", [weight], x, 4, compute)
    assert computed == [0, 4, 8] * 3 and len(kept.entries) == 1
    small = KeptOutputs(budget=10 * 4 * 4 + weight.numel() * 4 - 1)  # too large to keep: batch by batch
    computed.clear()
    lazy = small.get("fc:out", [weight], x, 4, compute)
    assert computed == [0] and not small.entries
    torch.testing.assert_close(torch.cat([lazy(s) for s in (0, 4, 8)]), x @ weight.T)
    assert computed == [0, 4, 8]


def test_legs_that_share_their_first_layers_run_them_once(few_digits):
    """Three legs that move the first, then the second, then the last layer: the first layer runs once per split
    for each of its two parameter sets (the first leg's ends), the legs after read its kept outputs."""
    network = network_of("fc3")
    theta_a, theta_b = random_params(0, arch="fc3"), random_params(1, arch="fc3")
    middle = {**theta_a, "fc1.weight": theta_b["fc1.weight"]}
    later = {**middle, "fc2.weight": theta_b["fc2.weight"]}
    path = Path([Leg(theta_a, middle, "fc1"), Leg(later, theta_b, "fc3")])
    path.legs.insert(1, Leg(middle, later, "fc2", fn=lambda t: interpolate(middle, later, t)))  # a stacked plan
    table, samples = evaluated_with_fc1_samples(network, path, few_digits)
    assert samples == 2 * (len(few_digits.y_train) + len(few_digits.y_test))
    assert_same_tables(table, evaluate_path(network, path, few_digits, points=3, progress=False, fast=False))


def evaluated_with_fc1_samples(network, path, data):
    """The path's table at 3 points per leg, and how many samples fc1 ran on (not the one-sample probes that size
    the batches)."""
    rows = []
    hook = network.model.fc1.register_forward_hook(lambda module, inputs, output: rows.append(len(output)))
    try:
        table = evaluate_path(network, path, data, points=3, progress=False)
    finally:
        hook.remove()
    return table, sum(count for count in rows if count > 1)


def test_permutation_stages_start_on_the_kept_outputs_of_the_matched_network(few_digits):
    """An `ot` path on fc3: its permutation stages run the last group first, so each starts on a network whose
    first layer is the matched Θ^B's, and they take the group's pre-activations (and h2's reader output) from the
    outputs the straight leg kept: fc1 runs on each split only for that leg's two ends (and on the few samples of
    each stage's exactness check). Every point as a full pass gives it."""
    network = network_of("fc3")
    theta_a, theta_b = random_params(0, arch="fc3"), random_params(1, arch="fc3")
    path = get_method("ot").build(theta_a, theta_b, context(network))
    path.method = "ot"
    assert [leg.name.rsplit("-", 1)[0] for leg in path.legs[1:]] == sorted(
        (leg.name.rsplit("-", 1)[0] for leg in path.legs[1:]), reverse=True
    )  # swap-h2-… before swap-h1-…
    table, samples = evaluated_with_fc1_samples(network, path, few_digits)
    checks = 2 * 2 * engine.SWAP_CHECK_SAMPLES  # per stage: the incremental and the full pass of one leg
    assert samples == 2 * (len(few_digits.y_train) + len(few_digits.y_test)) + checks
    assert_same_tables(table, evaluate_path(network, path, few_digits, points=3, progress=False, fast=False))


def test_a_joint_of_two_legs_is_evaluated_once(few_digits, monkeypatch):
    """The point where one leg ends and the next starts is on both grids: evaluated for the first, its scores are the
    second's t = 0 row, which a full evaluation of that point confirms."""
    network = network_of("fc3")
    theta_a, joint, theta_b = (random_params(seed, arch="fc3") for seed in range(3))
    path = Path([Leg(theta_a, joint, "first"), Leg({k: v.clone() for k, v in joint.items()}, theta_b, "second")])
    asked: list[tuple[str, list[float]]] = []
    points = Evaluator.points
    monkeypatch.setattr(
        Evaluator, "points", lambda self, leg, ts, splits: asked.append((leg.name, ts)) or points(self, leg, ts, splits)
    )
    table = evaluate_path(network, path, few_digits, points=3, progress=False)
    assert asked == [("first", [0.0, 0.5, 1.0]), ("second", [0.5, 1.0])]
    assert_same_tables(table, evaluate_path(network, path, few_digits, points=3, progress=False, fast=False))
    at_joint = table[table["position"] == 1.0]
    assert list(at_joint["leg_name"]) == ["first", "first", "second", "second"]
    for split, rows in at_joint.groupby("split"):
        assert rows["loss"].nunique() == 1 and rows["acc"].nunique() == 1, split


def test_worst_point_is_the_lowest_accuracy_per_split():
    table = pd.DataFrame(
        {
            "split": ["train", "train", "test", "test"],
            "acc": [0.9, 0.7, 0.8, 0.85],
            "loss": [0.1, 0.5, 0.3, 0.2],
            "position": [0.0, 0.5, 0.0, 1.0],
            "leg_name": ["a", "a", "a", "a"],
        }
    )
    worst = worst_points(table)
    assert worst["train"]["acc"] == 0.7 and worst["train"]["position"] == 0.5
    assert worst["test"]["acc"] == 0.8 and worst["test"]["loss"] == 0.3


def test_batches_capped_on_a_cpu_change_the_speed_not_the_table(few_digits, monkeypatch):
    """A CPU's layered engine evaluates batches whose activations stay near its caches (`CPU_BATCH_BYTES`): forced
    down to 7 samples a batch, every point of a route scores as in one batch."""
    network = network_of("fc3")
    theta_a, theta_b = random_params(0, arch="fc3"), random_params(1, arch="fc3")
    path = with_few_swaps(get_method("ot+wa").build(theta_a, theta_b, context(network, few_digits, wa_breakpoints=2)))
    whole = evaluate_path(network, path, few_digits, points=3, progress=False)
    per_sample = 4 * 3 * activation_elements(network.model, few_digits.input_shape)
    monkeypatch.setattr(engine, "CPU_BATCH_BYTES", per_sample * 3 * 7)
    assert Evaluator(network, few_digits, theta_a, MEMORY_BUDGET, True, 3).layered_batch == 7 < len(few_digits.y_test)
    assert_same_tables(evaluate_path(network, path, few_digits, points=3, progress=False), whole)
