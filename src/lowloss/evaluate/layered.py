"""The layered strategy: points that differ in a few consecutive layers share the rest of the network.

A route stage changes two layers (§4.1), its last stage one, a swap leg two units. For a chunk of
points, the layers before the first changing one run once per data batch with the shared
parameters, and the layers after the last changing one run once on every point's activations
stacked along the batch (again shared parameters: one large forward pass instead of T small ones).
In between each point runs on its own: in a loop on a CPU, where one point's products block well,
vmapped on a GPU, where batching is what keeps it busy. The first changing layer is linear in its
parameters, so when its parameters have rank r < T over the points (2 on a straight leg, 3 on an
arc), r products give every point's output.

A swap leg of a permutation stage changes two units u, v of a group, each a straight mix of two of the
base's units: the layer computing the group is run once for the base, the two mixed units' outputs
are mixes of the base's, and the layer reading the group gets a correction from just those two
units; only the rest of the network runs per leg, for many legs at once.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, vmap

from lowloss.evaluate.scores import Scores, evaluate_stacked, low_rank, mean_scores
from lowloss.nets.network import INPUT, OUTPUT, Layer, Network, after, before
from lowloss.nets.params import Params, unstack_params
from lowloss.nets.spec import unit_view
from lowloss.paths.legs import interpolate


def apply_weight(layer: Layer, weight: Tensor, inputs: Tensor) -> Tensor:
    """The layer's linear map with another weight and no bias (a correction term)."""
    module = layer.module
    if isinstance(module, nn.Conv2d):
        return F.conv2d(inputs, weight, None, module.stride, module.padding, module.dilation, module.groups)
    return F.linear(inputs, weight)


def unit_weight(rows: Tensor, like: Tensor, n_units: int) -> Tensor:
    """A reading weight restricted to k units: `rows` (k, …) in `unit_view(like, 1, n_units)` layout."""
    moved = like.movedim(1, 0)
    per_unit = moved.shape[0] // n_units
    return rows.reshape(rows.shape[0] * per_unit, *moved.shape[1:]).movedim(0, 1)


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

    @torch.no_grad()
    def swaps(
        self, base: Params, group: str, units: Tensor, t: Tensor, x: Tensor, y: Tensor, batch: int, per_chunk: int
    ) -> Scores:
        """Loss and accuracy at P swap-leg points: base units units[p] = (u, v) trade places a fraction t[p]."""
        network = self.network
        layer, reader = network.computing(group), network.reading(group)
        prefix, own = network.segment(INPUT, before(layer)), network.segment(before(layer), after(layer))
        between = network.segment(after(layer), before(reader))
        read, suffix = network.segment(before(reader), after(reader)), network.segment(after(reader), OUTPUT)
        n = network.spec.size(base, group)
        columns = unit_view(base[reader.weight], 1, n)

        def chunk_logits(pre: Tensor, out: Tensor, legs: slice) -> Tensor:
            u, v = units[legs, 0], units[legs, 1]
            pre_u, pre_v = pre[:, u].movedim(1, 0), pre[:, v].movedim(1, 0)  # (P, B, …)
            s = t[legs].reshape(-1, *[1] * (pre_u.dim() - 1))
            mixed = torch.stack([(1 - s) * pre_u + s * pre_v, (1 - s) * pre_v + s * pre_u], dim=2)
            kept = torch.stack([pre_u, pre_v], dim=2)
            c_u, c_v = columns[u], columns[v]
            s = t[legs, None]
            weights = [torch.stack([(1 - s) * c_u + s * c_v, (1 - s) * c_v + s * c_u], 1), torch.stack([c_u, c_v], 1)]
            corrections = []
            for pair, rows in zip((mixed, kept), weights):
                acts = between(base, pair.flatten(0, 1)).unflatten(0, pair.shape[:2])
                weight = vmap(lambda r: unit_weight(r, base[reader.weight], n))(rows)
                corrections.append(vmap(lambda w, a: apply_weight(reader, w, a))(weight, acts))
            z = out + corrections[0] - corrections[1]
            return suffix(base, z.flatten(0, 1)).unflatten(0, z.shape[:2])

        def batches() -> Iterator[Tensor]:
            for start in range(0, len(x), batch):
                pre = own(base, prefix(base, x[start : start + batch]))
                out = read(base, between(base, pre))
                yield torch.cat(
                    [chunk_logits(pre, out, slice(c, c + per_chunk)) for c in range(0, len(units), per_chunk)]
                )

        return mean_scores(batches(), y)
