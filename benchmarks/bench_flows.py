"""Cost of the global connection model at the paper's scale: D = 795, 2000 neurons per model, |V| = 16.

Fitting: seconds per optimiser step and peak memory of each kind (default ν: 6 layers, hidden 128),
each measured in a fresh process so that peaks do not mix, and the time of a default fit
extrapolated from it. Connecting: seconds to produce the points of one learned path (ν on 2n
neurons once, ν⁻¹ on n neurons per point) against the arc connection's points, and the IAF
direction's early-stopping solve against nflows' own D-pass inverse. The models are random
(`synthetic-mnist` shapes, so a butterfly has 784 + 1 + 10 numbers); cost does not depend on
training, except the number of fixed-point passes, so ν is moved off its linear start first.
"""

from __future__ import annotations

import multiprocessing
import resource
import time

import torch
from nflows.transforms.autoregressive import MaskedAffineAutoregressiveTransform

from lowloss.methods.flows.config import FitConfig
from lowloss.methods.flows.nu import HIDDEN, LAYERS, Bijection, FixedPointMAF, FlowShape, solve_autoregressive
from lowloss.methods.flows.objectives import bijection_objective, learned_leg, likelihood_objective
from lowloss.methods.flows.optimise import optimise
from lowloss.methods.interpolate import arc_leg
from lowloss.methods.neurons import butterflies
from lowloss.methods.registry import FLOWS
from lowloss.nets.models import build_model
from lowloss.training.data import load_dataset
from lowloss.training.device import pick_device

WIDTH, MODELS = 2000, 16
STEPS = 3  # measured steps per kind, after one warm-up step
POINTS = 21
DEFAULT_STEPS = FitConfig().steps
SOLVE_ROWS = 200


def model_set(device: torch.device):
    """|V| random networks of the paper's one-hidden-layer shape, the data, and the spec's group."""
    data = load_dataset("synthetic-mnist", device=device)
    thetas = []
    for seed in range(MODELS):
        torch.manual_seed(seed)
        model = build_model("onehidden", data.input_shape, data.num_classes, {"width": WIDTH}).to(device).eval()
        thetas.append({key: value.detach() for key, value in model.state_dict().items()})
    spec = model.spec()
    return model, spec, spec.groups[0], thetas, data


def nonlinear(nu: Bijection, scale: float = 0.02) -> Bijection:
    """Move every weight off the linear initialisation, standing in for a fitted ν."""
    with torch.no_grad():
        for param in nu.parameters():
            param.add_(scale * torch.randn_like(param))
    return nu


def fit_cost(method: str) -> dict:
    """Seconds per step and peak resident memory of fitting `method` (run in a fresh process)."""
    device = pick_device()
    model, spec, group, thetas, data = model_set(device)
    neurons = torch.cat([butterflies(theta, spec, group) for theta in thetas])
    flow_type, procedure = FLOWS[method]
    torch.manual_seed(0)
    nu = nonlinear(Bijection(FlowShape(flow_type, LAYERS, HIDDEN, neurons.shape[1]), neurons.mean(0), neurons.std(0)))
    nu = nu.to(device)
    if procedure == "flow":
        objective = likelihood_objective(nu, neurons, 256)
    else:
        objective = bijection_objective(nu, thetas, spec, group, model, data, 128, t_uniform=False)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    optimise(nu, objective, FitConfig(steps=1), progress=False)
    start = time.perf_counter()
    optimise(nu, objective, FitConfig(steps=STEPS, seed=1), progress=False)
    seconds = (time.perf_counter() - start) / STEPS
    peak = (
        torch.cuda.max_memory_allocated()
        if device.type == "cuda"
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    )
    return {"seconds": seconds, "peak": peak, "before": before, "device": device.type}


def path_cost() -> list[dict]:
    """Points of one learned path (21 x 2000 neurons) vs the arc's, and the IAF solve vs nflows' inverse."""
    device = pick_device()
    _, spec, group, thetas, _ = model_set(device)
    theta_a, theta_b = thetas[0], thetas[1]
    ts = [i / (POINTS - 1) for i in range(POINTS)]
    rows = []
    start = time.perf_counter()
    arc_leg(theta_a, theta_b, spec).at(ts)
    arc_s = time.perf_counter() - start
    for flow_type in ("realnvp", "iaf"):
        torch.manual_seed(0)
        nu = nonlinear(Bijection(FlowShape(flow_type, LAYERS, HIDDEN, 795))).to(device).requires_grad_(False)
        with torch.no_grad():
            start = time.perf_counter()
            leg = learned_leg(theta_a, theta_b, spec, group, nu, flow_type)
            built = time.perf_counter()
            leg.at(ts)
            done = time.perf_counter()
        rows.append(
            {
                "name": f"{flow_type} path: ν on 2n + ν⁻¹ on {POINTS} x n (s)",
                "baseline": f"arc path points ({POINTS} x n)",
                "value": done - start,
                "baseline_value": arc_s,
                "ratio": arc_s / (done - start),
                "note": f"n = {WIDTH}, D = 795; ν once: {built - start:.2f} s, ν⁻¹ per point: "
                f"{(done - built) / POINTS:.3f} s",
            }
        )
    layer = next(m for m in nu.modules() if isinstance(m, FixedPointMAF))
    x = butterflies(theta_a, spec, group)[:SOLVE_ROWS]  # nflows' D passes cost minutes on all n rows
    x = (x - x.mean(0)) / x.std(0)
    with torch.no_grad():
        start = time.perf_counter()
        _, _, passes = solve_autoregressive(layer, x)
        ours = time.perf_counter() - start
        start = time.perf_counter()
        MaskedAffineAutoregressiveTransform.inverse(layer, x)
        theirs = time.perf_counter() - start
    rows.append(
        {
            "name": f"iaf: ν of one layer on {SOLVE_ROWS} neurons, early-stopping solve (s)",
            "baseline": "nflows' inverse (D passes)",
            "value": ours,
            "baseline_value": theirs,
            "ratio": theirs / ours,
            "note": f"{passes} of 795 passes",
        }
    )
    return rows


def run() -> list[dict]:
    rows = []
    context = multiprocessing.get_context("spawn")
    for method in FLOWS:
        with context.Pool(1) as pool:
            cost = pool.apply(fit_cost, (method,))
        memory = "GPU allocated" if cost["device"] == "cuda" else "process RSS"
        rows.append(
            {
                "name": f"{method}: seconds per step",
                "value": cost["seconds"],
                "note": f"{cost['device']}; default fit ({DEFAULT_STEPS} steps) ≈ "
                f"{cost['seconds'] * DEFAULT_STEPS / 60:.1f} min; |V| = {MODELS}, n = {WIDTH}, D = 795, "
                f"ν {LAYERS} x {HIDDEN}",
            }
        )
        rows.append(
            {
                "name": f"{method}: peak memory (MiB)",
                "value": cost["peak"] / 2**20,
                "note": f"{memory}; before fitting {cost['before'] / 2**20:.0f} MiB",
            }
        )
    return rows + path_cost()
