"""The layered strategy: points that differ in a few consecutive layers share the rest of the network.

A route stage changes two layers (§4.1), its last stage one, a swap leg two units. For a chunk of
points, the layers before the first changing one run once per data batch with the shared
parameters, and the layers after the last changing one run once on every point's activations
stacked along the batch (again shared parameters: one large forward pass instead of T small ones).
In between each point runs on its own: in a loop on a CPU, where one point's products block well,
vmapped on a GPU, where batching is what keeps it busy. The first changing layer is linear in its
parameters, so when its parameters have rank r < T over the points (2 on a straight leg, 3 on an
arc), r products give every point's output. (Swap legs, which change two units, are `evaluate.swaps`.)

The legs of a route share their first layers (Θ^A's until stage 1 moves them, B''s after; a straight leg's ends
are the next leg's shared layers), so the outputs of the layers before the changing ones, and of the first
changing one at each basis parameter set, are kept over whole splits (`KeptOutputs`) for the legs after.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

import torch
from torch import Tensor
from torch.func import functional_call, vmap

from lowloss.evaluate.scores import KEPT_BYTES, Scores, evaluate_stacked, low_rank, mean_scores
from lowloss.nets.network import INPUT, OUTPUT, Layer, Network, after, before
from lowloss.nets.params import Params, unstack_params
from lowloss.paths.legs import interpolate


@dataclass(frozen=True)
class Plan:
    """How a chunk of T points is evaluated: the shared parameters, the first and last changing layer, the
    first one's outputs as coefficients (T, r) over r basis parameter sets (of that layer's tensors), and the other
    changing layers' parameters stacked (T, …)."""

    shared: Params
    count: int
    span: tuple[Layer, Layer] | None
    coeffs: Tensor | None = None
    basis: list[dict[str, Tensor]] | None = None
    middle: Params | None = None


Batches = Callable[[int], Tensor]
"""A tensor over a split, batch by batch: the batch that starts at a given sample."""


@dataclass(eq=False)
class Kept:
    """A network's output at a cut over a whole split, with the tensors it was computed from (copies of views,
    which would hold on to a whole stack of points)."""

    cut: str
    tensors: list[Tensor]
    x: Tensor
    batch: int
    output: Tensor

    def __post_init__(self) -> None:
        self.tensors = [tensor.clone() if tensor._base is not None else tensor for tensor in self.tensors]

    @property
    def bytes(self) -> int:
        return nbytes([self.output, *self.tensors])

    def holds(self, cut: str, tensors: list[Tensor], x: Tensor, batch: int) -> bool:
        return (
            (self.cut, self.batch) == (cut, batch)
            and self.x is x
            and all(
                a is b or (a.shape == b.shape and torch.equal(a, b)) for a, b in zip(self.tensors, tensors, strict=True)
            )
        )


class KeptOutputs:
    """Outputs at cuts over whole splits, kept up to `budget` bytes (the least recently used go first)."""

    def __init__(self, budget: int = KEPT_BYTES):
        self.budget = budget
        self.entries: list[Kept] = []

    def get(self, cut: str, tensors: list[Tensor], x: Tensor, batch: int, compute: Batches) -> Batches:
        """The output at `cut` of the network with `tensors` on x's batches: as kept, else computed over the whole
        split and kept, or batch by batch where one split's output would not fit the budget. Batches of the same
        size are computed the same way each time, so a kept output is what computing it again would give."""
        for index, entry in enumerate(self.entries):
            if entry.holds(cut, tensors, x, batch):
                self.entries.append(self.entries.pop(index))
                return lambda start: entry.output[start : start + batch]
        head = compute(0)
        size = head[0].numel() * head.element_size() * len(x) + nbytes(tensors)
        if size > self.budget:
            return lambda start: head if start == 0 else compute(start)
        output = head.new_empty(len(x), *head.shape[1:])
        output[: len(head)] = head
        for start in range(batch, len(x), batch):
            output[start : start + batch] = compute(start)
        kept = Kept(cut, tensors, x, batch, output)
        while sum(entry.bytes for entry in self.entries) + kept.bytes > self.budget:
            self.entries.pop(0)
        self.entries.append(kept)
        return lambda start: output[start : start + batch]


def nbytes(tensors: list[Tensor]) -> int:
    return sum(tensor.numel() * tensor.element_size() for tensor in tensors)


def layer_basis(
    layer: Layer, stacked: Params, ends: tuple[Params, Params] | None = None
) -> tuple[Tensor, list[Params]]:
    """Stacked points' parameters of one layer as coeffs (T, r) over r parameter sets of the layer, rows of
    `low_rank`: the layer's outputs at the r sets mix into every point's. The sets are the leg's `ends` where
    they span the points."""
    rows = torch.cat([stacked[key].flatten(1) for key in layer.keys], 1)
    ends = ends or ()
    lead = [torch.cat([end[key].flatten().to(rows) for key in layer.keys])[None] for end in ends]
    coeffs, basis_rows = low_rank(torch.cat([*lead, rows]), lead=len(lead))
    shapes = [stacked[key].shape[1:] for key in layer.keys]
    sizes = [shape.numel() for shape in shapes]
    basis = [
        {key: part.reshape(shape) for key, part, shape in zip(layer.keys, row.split(sizes), shapes)}
        for row in basis_rows
    ]
    return coeffs, basis


class LayerOutputs:
    """A chain's layer outputs on whole sample sets, kept across calls (`KeptOutputs`): what the layered engine's legs
    share, and what a route's least-squares fits share (Θ^A's outputs, which every fit reproduces; the features of
    each route point)."""

    def __init__(self, network: Network, budget: int = KEPT_BYTES):
        self.network = network
        self.kept = KeptOutputs(budget)

    def output(
        self, layer: Layer, params: Params, x: Tensor, batch: int, inputs: Callable[[], Batches] | None = None
    ) -> Batches:
        """The output of `layer` (pre-activation) with `params` on x; `inputs()` gives the layer's input (by default
        `self.inputs`), asked for only where the output is not kept."""
        own = layer.own(params)
        inputs = inputs or cache(lambda: self.inputs(params, layer, x, batch))

        def compute(start: int) -> Tensor:
            return functional_call(layer.module, own, (inputs()(start),))

        keys = sorted(self.network.segment(INPUT, after(layer)).keys)
        return self.kept.get(after(layer), [params[key] for key in keys], x, batch, compute)

    def inputs(self, params: Params, layer: Layer, x: Tensor, batch: int) -> Batches:
        """The input of `layer` with `params`, from the previous layer's output (kept), and so on."""
        index = self.network.layers.index(layer)
        if index == 0:
            prefix = self.network.segment(INPUT, before(layer))
            return lambda start: prefix(params, x[start : start + batch])
        previous = self.network.layers[index - 1]
        output = self.output(previous, params, x, batch)
        tail = self.network.segment(after(previous), before(layer))
        return lambda start: tail(params, output(start))


class LayeredEngine:
    """Evaluation of points of a chain network (`Network.is_chain`)."""

    def __init__(self, network: Network, batched: bool):
        self.network, self.batched = network, batched
        self.outputs = LayerOutputs(network)

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
        basis = [{key: ends[key] for key in first.keys} for ends in (start, end)]
        keys = self.network.segment(after(first), after(last)).keys
        middle = interpolate({key: start[key] for key in keys}, end, t)
        return Plan(start, len(ts), span, coeffs, basis, middle)

    def plan_stacked(self, stacked: Params, ends: tuple[Params, Params] | None = None) -> Plan:
        """Any leg's points, stacked: the first changing layer through the low-rank basis of its parameters, which
        are the leg's `ends` where they span the points (their outputs are what the legs before and after keep)."""
        count = len(next(iter(stacked.values())))
        shared = {key: value[0] for key, value in stacked.items()}
        changing = {key for key, value in stacked.items() if not torch.equal(value, value[:1].expand_as(value))}
        span = self._span(changing)
        if span is None:
            return Plan(shared, count, None)
        first, last = span
        coeffs, basis = layer_basis(first, stacked, ends)
        keys = self.network.segment(after(first), after(last)).keys
        return Plan(shared, count, span, coeffs, basis, {key: stacked[key] for key in keys})

    @torch.no_grad()
    def points(self, plan: Plan, x: Tensor, y: Tensor, batch: int) -> Scores:
        """Mean loss and accuracy of every point of the plan: (T,) each."""
        if plan.span is None:
            loss, acc = evaluate_stacked(self.network.model, {k: v[None] for k, v in plan.shared.items()}, x, y, batch)
            return loss.expand(plan.count), acc.expand(plan.count)
        first, last = plan.span
        middle = self.network.segment(after(first), after(last))
        suffix = self.network.segment(after(last), OUTPUT)
        inputs = cache(lambda: self.outputs.inputs(plan.shared, first, x, batch))  # once, if a basis output is not kept
        per_basis = [self.outputs.output(first, {**plan.shared, **params}, x, batch, inputs) for params in plan.basis]

        def logits(start: int) -> Tensor:
            outputs = torch.stack([output(start) for output in per_basis])
            z = torch.tensordot(plan.coeffs, outputs, dims=1)  # (T, B, …): every point's first changing layer
            if self.batched:
                z = vmap(middle)(plan.middle, z)
            else:
                z = torch.stack([middle(unstack_params(plan.middle, i), z[i]) for i in range(plan.count)])
            return suffix(plan.shared, z.flatten(0, 1)).unflatten(0, (plan.count, len(z[0])))

        return mean_scores((logits(start) for start in range(0, len(x), batch)), y)
