"""What fitting ν minimises (§3.3): Flow's likelihood of V's units, or Bijection's loss along eq. (7), eq. (8)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from lowloss.evaluate.engine import evaluate_stacked
from lowloss.methods.flows.nu import Bijection
from lowloss.methods.interpolate import UnitCurve, generalised_arc, units_leg
from lowloss.methods.neurons import butterflies
from lowloss.nets.params import Params, unstack_params
from lowloss.nets.spec import Spec
from lowloss.paths.legs import Leg
from lowloss.training.data import Dataset, augment_batch


def learned_leg(theta_a: Params, theta_b: Params, spec: Spec, group: str, nu: Bijection, name: str) -> Leg:
    """Eq. (7) on the group's butterflies: ν once on each endpoint, ν⁻¹ at every point asked for.

    Differentiable in ν's weights (Bijection training uses this very leg); endpoints are exact
    through `Leg.at` although ν⁻¹(ν(X)) only approximates X.
    """
    zx = nu(butterflies(theta_a, spec, group))
    zy = nu(butterflies(theta_b, spec, group))
    curve = UnitCurve(spec, group, lambda t: generalised_arc(zx, zy, t, inverse=nu.inverse))
    return units_leg(theta_a, theta_b, [curve], name)


Objective = Callable[[torch.Generator], tuple[torch.Tensor, dict]]
"""generator -> (loss of one step, what to record with it); all randomness comes from the generator."""


def likelihood_objective(nu: Bijection, neurons: torch.Tensor, batch_size: int) -> Objective:
    """Flow: negative log-likelihood per coordinate of a random minibatch of V's neurons."""

    def objective(generator: torch.Generator) -> tuple[torch.Tensor, dict]:
        index = torch.randint(len(neurons), (batch_size,), generator=generator).to(neurons.device)
        return -nu.log_prob(neurons[index]).mean() / nu.shape.features, {}

    return objective


def bijection_objective(
    nu: Bijection,
    thetas: Sequence[Params],
    spec: Spec,
    group: str,
    model: nn.Module,
    data: Dataset,
    batch_size: int,
    t_uniform: bool,
) -> Objective:
    """Bijection, eq. (8): cross-entropy at ψ_W(t, Θ^A, Θ^B) for a random pair A ≠ B of V.

    t = 0.5 (the paper's choice: the midpoint is where the loss peaks) or t ~ U(0, 1); gradients
    flow through ν (on both endpoints) and ν⁻¹ (at the point).
    """

    def objective(generator: torch.Generator) -> tuple[torch.Tensor, dict]:
        a, b = torch.randperm(len(thetas), generator=generator)[:2].tolist()
        t = torch.rand((), generator=generator).item() if t_uniform else 0.5
        index = torch.randint(len(data.x_train), (batch_size,), generator=generator).to(data.x_train.device)
        x, y = data.x_train[index], data.y_train[index]
        if data.augment:
            x = augment_batch(x, generator)
        theta_t = unstack_params(learned_leg(thetas[a], thetas[b], spec, group, nu, "bijection").at([t]), 0)
        return F.cross_entropy(functional_call(model, theta_t, (x,)), y), {"t": t, "pair": [a, b]}

    return objective


SCORES = {
    "flow": "negative log-likelihood per coordinate of V's neurons",
    "bijection": "train cross-entropy at t = 0.5 between consecutive members of V",
}


@torch.no_grad()
def mean_nll(nu: Bijection, neurons: torch.Tensor, chunk: int = 4096) -> float:
    total = sum(-nu.log_prob(part).sum().item() for part in neurons.split(chunk))
    return total / neurons.numel()


@torch.no_grad()
def midpoint_loss(
    nu: Bijection, thetas: Sequence[Params], spec: Spec, group: str, model: nn.Module, data: Dataset, pairs: int = 4
) -> float:
    """Mean train loss at ψ_W(0.5) over the pairs (i, i + 1) of V: a fixed, cheap view of eq. (8)."""
    losses = []
    for i in range(min(pairs, len(thetas))):
        leg = learned_leg(thetas[i], thetas[(i + 1) % len(thetas)], spec, group, nu, "midpoint")
        loss, _ = evaluate_stacked(model, leg.at([0.5]), data.x_train, data.y_train, batch=1024)
        losses.append(loss.item())
    return sum(losses) / len(losses)
