"""Any model: spec inference and its permutation self-test on torchvision's ResNet-50, and weight matching on
its inferred spec against the `rebasin` package (PyPI 0.0.47, which traces the model with torchview) on the
same two randomly initialised ResNet-50s.

Rows: inference + self-test CPU seconds against the 2 s budget (CPU seconds bound an idle machine's wall time
from above; the wall time, and a first forward pass of the same input timed before, are in the note); weight
matching to its fixed point (the default), after one sweep and at its aligned start alone (`--wm-sweeps 1`, `0`),
rebasin's CPU seconds against ours (CPU time is what a loaded machine does not distort; wall seconds
are in the note), with both objectives (Σ ⟨W_A, π(W_B)⟩ over the trained tensors, higher is better) and how far
each matched Θ^B's outputs drift from Θ^B's (a permutation must leave the function unchanged).
"""

from __future__ import annotations

import copy
import time

import torch
import torchvision

from lowloss.methods.weight_matching import match_weights, objective
from lowloss.nets.inference import example_input, infer_spec
from lowloss.nets.params import Params
from lowloss.nets.spec import permute

INPUT = (3, 32, 32)
BUDGET_SECONDS = 2.0
BUDGETS = (None, 1, 0)
"""Weight matching's sweeps: to the fixed point (the default), one sweep, the aligned start alone."""


def resnet50(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torchvision.models.resnet50(num_classes=10).eval()


def drift(model: torch.nn.Module, reference: Params, params: Params, x: torch.Tensor) -> float:
    """Largest change of the outputs on `x` from `reference`'s."""
    with torch.no_grad():
        before = torch.func.functional_call(model, reference, (x,))
        return float((torch.func.functional_call(model, params, (x,)) - before).abs().max())


def rebasin_matched(model: torch.nn.Module, theta_a: Params, theta_b: Params, x: torch.Tensor) -> Params:
    """Θ^B permuted by rebasin's weight matching (its PermutationCoordinateDescent) towards Θ^A."""
    from rebasin import PermutationCoordinateDescent

    model_a, model_b = copy.deepcopy(model), copy.deepcopy(model)
    model_a.load_state_dict(theta_a)
    model_b.load_state_dict(theta_b)
    PermutationCoordinateDescent(model_a, model_b, x).rebasin()
    return {key: value.detach() for key, value in model_b.state_dict().items()}


def run() -> list[dict]:
    model = resnet50(0)
    x = example_input(INPUT)
    with torch.no_grad():
        started = time.perf_counter()
        model(x)
        forward = time.perf_counter() - started
    started, cpu = time.perf_counter(), time.process_time()
    spec = infer_spec(model, x)
    inference, inference_cpu = time.perf_counter() - started, time.process_time() - cpu
    theta_a = {key: value.detach() for key, value in model.state_dict().items()}
    theta_b = {key: value.detach() for key, value in resnet50(1).state_dict().items()}
    trained = spec.trained()
    ours = {}
    for sweeps in BUDGETS:
        started, cpu = time.perf_counter(), time.process_time()
        params = permute(theta_b, spec, match_weights(theta_a, theta_b, trained, sweeps=sweeps))
        ours[sweeps] = (params, time.perf_counter() - started, time.process_time() - cpu)
    started, cpu = time.perf_counter(), time.process_time()
    theirs = rebasin_matched(model, theta_a, theta_b, x)
    theirs_seconds, theirs_cpu = time.perf_counter() - started, time.process_time() - cpu
    identity = {group: torch.arange(spec.size(theta_a, group)) for group in trained.groups}
    test_x = example_input(INPUT, seed=1)
    theirs_objective = objective(theta_a, theirs, trained, identity)
    unmatched = objective(theta_a, theta_b, trained, identity)
    rows = []
    for sweeps, (params, seconds, cpu_seconds) in ours.items():
        budget = "to its fixed point" if sweeps is None else f"--wm-sweeps {sweeps}"
        rows.append(
            {
                "name": f"resnet50: weight matching on the inferred spec ({budget}), CPU seconds",
                "baseline": "rebasin 0.0.47 (PyPI)",
                "value": cpu_seconds,
                "baseline_value": theirs_cpu,
                "ratio": theirs_cpu / cpu_seconds,
                "target": 10.0,
                "note": f"wall seconds ours {seconds:.1f}, rebasin {theirs_seconds:.1f} "
                f"({theirs_seconds / seconds:.1f}x); "
                f"objective ours {objective(theta_a, params, trained, identity):.6g}, rebasin {theirs_objective:.6g}, "
                f"unmatched {unmatched:.6g}; output drift from Θ^B ours {drift(model, theta_b, params, test_x):.2g}, "
                f"rebasin {drift(model, theta_b, theirs, test_x):.2g}",
            }
        )
    inference_row = {
        "name": "resnet50: spec inference + permutation self-test, CPU seconds",
        "baseline": "the 2 s budget",
        "value": inference_cpu,
        "baseline_value": BUDGET_SECONDS,
        "ratio": BUDGET_SECONDS / inference_cpu,
        "target": 1.0,
        "note": f"{len(spec.groups)} groups; wall {inference:.2f} s; the first forward pass of the same "
        f"2 x 3 x 32 x 32 input, timed before (it pays the conv kernels' one-time start-up): {forward:.2f} s",
    }
    return [inference_row, *rows]
