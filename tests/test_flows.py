"""Learned bijections ν (RealNVP / IAF on nflows), Flow and Bijection fitting, connectors, learned methods."""

import json
from dataclasses import asdict

import pytest
import torch
from nflows.transforms.autoregressive import MaskedAffineAutoregressiveTransform
from scipy.stats import ks_2samp

from lowloss.evaluate import evaluate_path
from lowloss.methods.flows.config import FitConfig
from lowloss.methods.flows.connector import fit_connector, load_connector
from lowloss.methods.flows.nu import Bijection, FixedPointMAF, FlowShape, solve_autoregressive
from lowloss.methods.flows.objectives import likelihood_objective
from lowloss.methods.flows.optimise import optimise
from lowloss.methods.interpolate import generalised_arc
from lowloss.storage.model_set import load_model_set, write_model_set
from lowloss.storage.weights import load_weights, save_weights
from tests.conftest import assert_one_line_error, copy_with_meta, evaluated_points, method_path, run_main

KINDS = ("realnvp", "iaf")
D = 75  # a digits butterfly: 64 inputs + 1 bias + 10 outputs
WIDTH, EPOCHS = 256, 5
V_SEEDS, UNSEEN_SEEDS = range(2, 8), (0, 1)


@pytest.fixture(autouse=True)
def one_thread():
    """These tensors are tiny: on a busy 2-core machine a second intra-op thread only adds waiting (12x here)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def perturbed(kind: str, features: int = D, layers: int = 3, scale: float = 0.02) -> Bijection:
    """A ν whose every weight is moved off its (linear) initialisation, so it is really nonlinear."""
    torch.manual_seed(0)
    nu = Bijection(FlowShape(kind, layers, 32, features), torch.randn(features), torch.rand(features) + 0.5)
    with torch.no_grad():
        for param in nu.parameters():
            param.add_(scale * torch.randn_like(param))
    return nu


# --- ν itself ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_inverse_undoes_forward_and_keeps_leading_dimensions(kind):
    nu = perturbed(kind)
    x = torch.randn(3, 40, D) * nu.std + nu.mean
    with torch.no_grad():
        z = nu(x)
        back = nu.inverse(z)
    assert z.shape == x.shape and not torch.allclose(z, (x - nu.mean) / nu.std, atol=1e-2)
    assert (back - x).abs().max() < 1e-4


@pytest.mark.parametrize("kind", KINDS)
def test_gradients_reach_every_flow_weight_through_the_inverse(kind):
    nu = perturbed(kind)
    nu.inverse(torch.randn(64, D)).square().mean().backward()
    for name, param in nu.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name


@pytest.mark.parametrize("kind", KINDS)
def test_fresh_bijection_connects_by_the_arc_around_the_mean(kind):
    """Every layer starts linear, so eq. (7) through a fresh ν is eq. (6) around V's mean."""
    mean, std = torch.randn(D), torch.rand(D) + 0.5
    nu = Bijection(FlowShape(kind, 3, 32, D), mean, std)
    x, y, t = torch.randn(20, D), torch.randn(20, D), torch.linspace(0, 1, 5)
    with torch.no_grad():
        learned = generalised_arc(x, y, t, nu, nu.inverse)
    arc = generalised_arc(x, y, t, lambda v: v - mean, lambda z: z + mean)
    assert torch.allclose(learned, arc, atol=1e-4)


@pytest.mark.parametrize("kind", KINDS)
def test_saved_bijection_loads_as_the_same_function(kind, tmp_path):
    """Permutations, masks, standardisation and weights all travel in the file; the sidecar rebuilds ν."""
    nu = perturbed(kind)
    save_weights(
        tmp_path / "c.safetensors",
        nu.state_dict(),
        {"kind": "connector", "method": f"{kind}-flow", "flow": asdict(nu.shape)},
    )
    loaded = load_connector(load_weights(tmp_path / "c.safetensors"), f"{kind}-flow")
    x = torch.randn(30, D)
    with torch.no_grad():
        assert torch.equal(loaded(x), nu(x)) and torch.equal(loaded.inverse(x), nu.inverse(x))
    assert not any(p.requires_grad for p in loaded.parameters())


def test_fixed_point_inverse_is_nflows_inverse_in_fewer_passes():
    torch.manual_seed(0)
    maf = FixedPointMAF(D, 32, num_blocks=2)
    with torch.no_grad():
        for param in maf.parameters():
            param.mul_(0.5)
    outputs = torch.randn(100, D)
    with torch.no_grad():
        ours, logabsdet, passes = solve_autoregressive(maf, outputs)
        theirs, their_logabsdet = MaskedAffineAutoregressiveTransform.inverse(maf, outputs)
    assert torch.allclose(ours, theirs, atol=1e-6) and torch.allclose(logabsdet, their_logabsdet, atol=1e-4)
    assert passes < D
    assert (maf(ours)[0] - outputs).abs().max() < 1e-4


def lognormal(n: int, generator: torch.Generator) -> torch.Tensor:
    """exp(Z), Z a correlated 2-D Gaussian: skewed, positive, far from Gaussian."""
    z = torch.randn(n, 2, generator=generator) @ torch.tensor([[1.0, 0.6], [0.0, 0.8]])
    return z.exp()


@pytest.mark.parametrize("kind", KINDS)
def test_likelihood_flow_keeps_a_lognormal_at_the_midpoint_better_than_arc(kind):
    generator = torch.Generator().manual_seed(0)
    train, x, y, fresh = (lognormal(2000, generator) for _ in range(4))
    torch.manual_seed(0)
    nu = Bijection(FlowShape(kind, 6, 32, 2), train.mean(0), train.std(0))
    curve = optimise(nu, likelihood_objective(nu, train, 256), FitConfig(steps=200, lr=3e-3), progress=False)
    assert curve[-1]["loss"] < curve[0]["loss"]
    half = torch.tensor([0.5])
    mu = train.mean(0)
    with torch.no_grad():
        learned = generalised_arc(x, y, half, nu, nu.inverse)[0]
    arc = generalised_arc(x, y, half, lambda v: v - mu, lambda z: z + mu)[0]

    def distance(sample: torch.Tensor) -> float:  # mean Kolmogorov-Smirnov statistic of the marginals
        return sum(ks_2samp(sample[:, j].numpy(), fresh[:, j].numpy()).statistic for j in range(2)) / 2

    assert distance(learned) < 0.5 * distance(arc), (distance(learned), distance(arc))


def test_fit_resumes_bit_identically_and_restarts_from_a_stale_checkpoint(tmp_path):
    neurons = lognormal(500, torch.Generator().manual_seed(1))

    def fit(steps: int, checkpoint=None, identity: str = "run") -> tuple[Bijection, list[dict]]:
        torch.manual_seed(0)
        nu = Bijection(FlowShape("realnvp", 2, 16, 2), neurons.mean(0), neurons.std(0))
        config = FitConfig(steps=steps, batch_size=64, checkpoint_every=2)
        return nu, optimise(nu, likelihood_objective(nu, neurons, 64), config, checkpoint, identity, progress=False)

    whole, whole_curve = fit(6)
    checkpoint = tmp_path / "ckpt.safetensors"
    fit(4, checkpoint)  # "interrupted" after 4 steps: the checkpoint holds ν, Adam's moments and the curve
    resumed, resumed_curve = fit(6, checkpoint)
    assert resumed_curve == whole_curve
    assert all(torch.equal(a, b) for a, b in zip(whole.state_dict().values(), resumed.state_dict().values()))
    fit(4, checkpoint)
    fresh, fresh_curve = fit(6, checkpoint, identity="another configuration")  # a stale checkpoint is discarded
    assert fresh_curve == whole_curve


def test_an_exploding_step_is_clipped_or_skipped_and_adam_stays_finite(tmp_path):
    """Bijection fitting meets rare pairs where ν⁻¹ nearly overflows: the optimiser state must stay finite."""
    neurons = lognormal(200, torch.Generator().manual_seed(2))
    torch.manual_seed(0)
    nu = Bijection(FlowShape("realnvp", 2, 8, 2), neurons.mean(0), neurons.std(0))
    nll = likelihood_objective(nu, neurons, 32)
    scale = iter([1.0, 1e6, 1e30, 1.0, 1.0, 1.0])  # step 2: clipped; step 3: gradient overflows, skipped (norm null)

    def objective(generator):
        loss, record = nll(generator)
        return loss * next(scale), record

    checkpoint = tmp_path / "ckpt.safetensors"
    curve = optimise(
        nu, objective, FitConfig(steps=6, batch_size=32, checkpoint_every=3), checkpoint, "run", progress=False
    )
    assert curve[1]["grad_norm"] > FitConfig().max_grad_norm and curve[2]["grad_norm"] is None
    assert all(torch.isfinite(p).all() for p in nu.parameters())
    assert load_weights(checkpoint).meta["step"] == 6  # Adam's moments were finite enough to be saved


# --- connectors on a digits model set ------------------------------------------------------------


@pytest.fixture(scope="module")
def vset(digits_endpoints, tmp_path_factory):
    """V: six width-256 digits models; two more endpoints trained the same way but outside V."""
    folder = tmp_path_factory.mktemp("modelset")
    members = [digits_endpoints(WIDTH, s, EPOCHS) for s in V_SEEDS]
    manifest = members[0].parent / "V-flows.json"  # beside its members: a manifest names files in its folder
    write_model_set(manifest, members)
    return {
        "V": manifest,
        "unseen": [digits_endpoints(WIDTH, s, EPOCHS) for s in UNSEEN_SEEDS],
        "seen": digits_endpoints(WIDTH, V_SEEDS[0], EPOCHS),
        "folder": folder,
    }


@pytest.fixture(scope="module")
def bijection(vset, digits):
    out = vset["folder"] / "bijection.safetensors"
    meta = fit_connector(
        "realnvp-bijection",
        load_model_set(vset["V"]),
        out,
        layers=2,
        hidden=32,
        config=FitConfig(steps=30, lr=1e-2, batch_size=128),
        data=digits,
        progress=False,
    )
    return out, meta


def test_bijection_lowers_the_midpoint_loss_and_beats_linear_between_unseen_endpoints(vset, bijection, digits):
    out, meta = bijection
    assert meta["score_end"] < meta["score_start"]
    assert [row["step"] for row in meta["curve"]] == list(range(1, 31))
    assert all(row["t"] == 0.5 and row["pair"][0] != row["pair"][1] for row in meta["curve"])
    sidecar = load_weights(out).meta
    assert sidecar["method"] == "realnvp-bijection" and sidecar["arch_options"] == {"width": WIDTH}
    assert sidecar["model_set"]["hashes"] == list(load_model_set(vset["V"]).hashes)
    worst = {}
    for method in ("realnvp-bijection", "linear"):
        model, path, a, b = method_path(method, *vset["unseen"], digits, connector=out)
        ends = path.legs[0].at([0.0, 1.0])
        assert all(torch.equal(ends[k][0], a.tensors[k]) and torch.equal(ends[k][1], b.tensors[k]) for k in ends)
        train = evaluate_path(model, path, digits, points=11, splits=("train",), progress=False)
        worst[method] = (train["loss"].max(), train["acc"].min())
    assert worst["realnvp-bijection"][0] < worst["linear"][0]
    assert worst["realnvp-bijection"][1] >= worst["linear"][1] - 0.01  # 1 % = 13 of 1348 digits


def test_connector_round_trip_rebuilds_the_same_bijection(vset, bijection, digits):
    out, _ = bijection
    _, path, _, _ = method_path("realnvp-bijection", *vset["unseen"], digits, connector=out)
    _, again, _, _ = method_path("realnvp-bijection", *vset["unseen"], digits, connector=out)
    first, second = path.legs[0].at([0.3, 0.5]), again.legs[0].at([0.3, 0.5])
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_fit_and_connect_from_the_command_line(vset, tmp_path, capsys):
    for kind in ("iaf-flow", "realnvp-flow"):
        out = tmp_path / f"{kind}.safetensors"
        result = run_main(
            capsys,
            "fit-connector",
            "--kind",
            kind,
            "--model-set",
            vset["V"],
            "--steps",
            "3",
            "--layers",
            "1",
            "--hidden",
            "16",
            "--out",
            out,
            "--no-progress",
        )
        assert result.returncode == 0, result.stderr
        line = json.loads(result.stdout.strip().splitlines()[-1])
        assert line["method"] == kind and line["models"] == len(V_SEEDS) and out.exists()
        csv = tmp_path / f"{kind}.csv"
        result = run_main(
            capsys,
            "connect",
            *vset["unseen"],
            "--method",
            kind,
            "--connector",
            out,
            "--points",
            "3",
            "--out",
            csv,
            "--no-progress",
        )
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout.strip().splitlines()[-1])["method"] == kind and csv.exists()


@pytest.mark.parametrize("kind", ["realnvp-bijection", "realnvp-flow"])
def test_a_fit_and_its_path_run_twice_give_identical_files(kind, vset, tmp_path, capsys):
    """Every random choice of a fit comes from its seed, and evaluation is deterministic: a re-run on the
    same machine reproduces the connector byte for byte and the path table's points (its seconds are each run's own)."""
    files = []
    for run in ("first", "second"):
        out, csv = tmp_path / f"{run}.safetensors", tmp_path / f"{run}.csv"
        result = run_main(
            capsys,
            "fit-connector",
            "--kind",
            kind,
            "--model-set",
            vset["V"],
            "--steps",
            "12",
            "--layers",
            "2",
            "--hidden",
            "16",
            "--batch-size",
            "64",
            "--out",
            out,
            "--no-progress",
        )
        assert result.returncode == 0, result.stderr
        result = run_main(
            capsys,
            "connect",
            *vset["unseen"],
            "--method",
            kind,
            "--connector",
            out,
            "--points",
            "5",
            "--out",
            csv,
            "--no-progress",
        )
        assert result.returncode == 0, result.stderr
        files.append((out.read_bytes(), evaluated_points(csv).to_csv(index=False)))
    assert files[0] == files[1]


def test_bijection_can_draw_t_uniformly(vset, tmp_path, capsys):
    out = tmp_path / "uniform.safetensors"
    result = run_main(
        capsys,
        "fit-connector",
        "--kind",
        "realnvp-bijection",
        "--model-set",
        vset["V"],
        "--steps",
        "4",
        "--layers",
        "1",
        "--hidden",
        "8",
        "--t-uniform",
        "--out",
        out,
        "--no-progress",
    )
    assert result.returncode == 0, result.stderr
    ts = [row["t"] for row in load_weights(out).meta["curve"]]
    assert len(set(ts)) == 4 and all(0 <= t <= 1 for t in ts)


def test_seen_endpoints_need_allow_seen(vset, bijection, digits, tmp_path, capsys):
    out, _ = bijection
    args = [
        vset["seen"],
        vset["unseen"][0],
        "--method",
        "realnvp-bijection",
        "--connector",
        out,
        "--points",
        "3",
        "--out",
        tmp_path / "p.csv",
        "--no-progress",
    ]
    assert_one_line_error(run_main(capsys, "connect", *args), "is in the model set", "--allow-seen")
    assert run_main(capsys, "connect", *args, "--allow-seen").returncode == 0


def test_bad_connectors_are_one_line_errors(vset, bijection, digits_endpoints, tmp_path, capsys):
    out, _ = bijection
    narrow = digits_endpoints(64, 0, 2), digits_endpoints(64, 1, 2)
    other_data = [
        copy_with_meta(p, tmp_path / f"{i}.safetensors", dataset="digits-v2") for i, p in enumerate(vset["unseen"])
    ]
    cases = [
        (narrow, "realnvp-bijection", out, "fitted for onehidden {'width': 256}"),
        (other_data, "realnvp-bijection", out, "on 'digits-v2'"),
        (vset["unseen"], "realnvp-flow", out, "fitted for 'realnvp-bijection', not 'realnvp-flow'"),
        (vset["unseen"], "realnvp-bijection", None, "needs --connector"),
        (vset["unseen"], "realnvp-bijection", vset["unseen"][0], "but a fitted connector ν"),
    ]
    for endpoints, method, connector, fragment in cases:
        extra = [] if connector is None else ["--connector", connector]
        result = run_main(
            capsys,
            "connect",
            *endpoints,
            "--method",
            method,
            *extra,
            "--points",
            "3",
            "--out",
            tmp_path / "p.csv",
            "--no-progress",
        )
        assert_one_line_error(result, fragment)


def test_fit_connector_bad_input_is_one_line(vset, tmp_path, capsys):
    base = ["fit-connector", "--model-set", vset["V"], "--out", tmp_path / "c.safetensors", "--no-progress"]
    assert_one_line_error(
        run_main(capsys, *base, "--kind", "realnvp-flow", "--dataset", "mnist"), "V was trained on 'digits'"
    )
    assert_one_line_error(run_main(capsys, *base, "--kind", "iaf-bijection"), "invalid choice")
    assert_one_line_error(run_main(capsys, *base, "--kind", "realnvp-flow", "--t-uniform"), "--t-uniform")
    assert not (tmp_path / "c.safetensors").exists()
