"""The layered strategy: points that differ in a few consecutive layers share the rest of the network.

A route stage changes two layers (§4.1), its last stage one, a swap leg two units. For a chunk of
points, the layers before the first changing one run once per data batch with the shared
parameters, and the layers after the last changing one run once on every point's activations
stacked along the batch (again shared parameters: one large forward pass instead of T small ones).
In between each point runs on its own: in a loop on a CPU, where one point's products block well,
vmapped on a GPU, where batching is what keeps it busy. The first changing layer is linear in its
parameters, so when its parameters have rank r < T over the points (2 on a straight leg, 3 on an
arc), r products give every point's output. (Swap legs, which change two units, are `evaluate.swaps`.)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torch.func import functional_call, vmap

from lowloss.evaluate.scores import Scores, evaluate_stacked, low_rank, mean_scores
from lowloss.nets.network import INPUT, OUTPUT, Layer, Network, after, before
from lowloss.nets.params import Params, unstack_params
from lowloss.paths.legs import interpolate


@dataclass(frozen=True)
class Plan:
    """How a chunk of T points is evaluated: the shared parameters, the first and last changing layer, the
    first one's outputs as coefficients (T, r) over r basis parameter sets, and the other changing layers'
    parameters stacked (T, …)."""

    shared: Params
    count: int
    span: tuple[Layer, Layer] | None
    coeffs: Tensor | None = None
    basis: list[dict[str, Tensor]] | None = None
    middle: Params | None = None


class LayeredEngine:
    """Evaluation of points of a chain network (`Network.is_chain`)."""

    def __init__(self, network: Network, batched: bool):
        self.network, self.batched = network, batched

    def _span(self, changing: set[str]) -> tuple[Layer, Layer] | None:
        hits = [layer for layer in self.network.layers if changing & set(layer.keys)]
        return (hits[0], hits[-1]) if hits else None

    def plan_straight(self, start: Params, end: Params, ts: list[float]) -> Plan:
        """A straight leg's points (1 − t) start + t end, without stacking what does not change: the first
        changing layer's outputs are the mix of its outputs at the two ends."""
        changing = {key for key in start if not torch.equal(start[key], end[key])}
        span = self._span(changing)
        if span is None:
            return Plan(start, len(ts), None)
        first, last = span
        t = torch.tensor(ts, dtype=torch.float64)
        coeffs = torch.stack([1 - t, t], 1).to(start[first.weight])
        basis = [{name: ends[key] for name, key in zip(("weight", "bias"), first.keys)} for ends in (start, end)]
        keys = self.network.segment(after(first), after(last)).keys
        middle = interpolate({key: start[key] for key in keys}, end, t)
        return Plan(start, len(ts), span, coeffs, basis, middle)

    def plan_stacked(self, stacked: Params) -> Plan:
        """Any leg's points, stacked: the first changing layer through the low-rank basis of its parameters."""
        count = len(next(iter(stacked.values())))
        shared = {key: value[0] for key, value in stacked.items()}
        changing = {key for key, value in stacked.items() if not torch.equal(value, value[:1].expand_as(value))}
        span = self._span(changing)
        if span is None:
            return Plan(shared, count, None)
        first, last = span
        coeffs, rows = low_rank(torch.cat([stacked[key].flatten(1) for key in first.keys], 1))
        shapes = [stacked[key].shape[1:] for key in first.keys]
        sizes = [shape.numel() for shape in shapes]
        basis = [
            dict(zip(("weight", "bias"), (part.reshape(shape) for part, shape in zip(row.split(sizes), shapes))))
            for row in rows
        ]
        keys = self.network.segment(after(first), after(last)).keys
        return Plan(shared, count, span, coeffs, basis, {key: stacked[key] for key in keys})

    @torch.no_grad()
    def points(self, plan: Plan, x: Tensor, y: Tensor, batch: int) -> Scores:
        """Mean loss and accuracy of every point of the plan: (T,) each."""
        if plan.span is None:
            loss, acc = evaluate_stacked(self.network.model, {k: v[None] for k, v in plan.shared.items()}, x, y, batch)
            return loss.expand(plan.count), acc.expand(plan.count)
        first, last = plan.span
        prefix = self.network.segment(INPUT, before(first))
        middle = self.network.segment(after(first), after(last))
        suffix = self.network.segment(after(last), OUTPUT)

        def logits(xb: Tensor) -> Tensor:
            h = prefix(plan.shared, xb)
            per_basis = torch.stack([functional_call(first.module, params, (h,)) for params in plan.basis])
            z = torch.tensordot(plan.coeffs, per_basis, dims=1)  # (T, B, …): every point's first changing layer
            if self.batched:
                z = vmap(middle)(plan.middle, z)
            else:
                z = torch.stack([middle(unstack_params(plan.middle, i), z[i]) for i in range(plan.count)])
            return suffix(plan.shared, z.flatten(0, 1)).unflatten(0, (plan.count, len(xb)))

        return mean_scores((logits(x[start : start + batch]) for start in range(0, len(x), batch)), y)
