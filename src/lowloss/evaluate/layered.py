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

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, vmap

from lowloss.evaluate.scores import Scores, evaluate_stacked, low_rank, mean_scores
from lowloss.network import INPUT, OUTPUT, Layer, Network, after, before
from lowloss.spec import Params, unit_view


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


class LayeredEngine:
    """Evaluation of stacked points of a chain network (`Network.is_chain`)."""

    def __init__(self, network: Network, batched: bool):
        self.network, self.batched = network, batched

    def span(self, stacked: Params) -> tuple[Layer, Layer] | None:
        """The first and last layer whose parameters differ between the points (None when none do)."""
        changing = {key for key, value in stacked.items() if not torch.equal(value, value[:1].expand_as(value))}
        hits = [layer for layer in self.network.layers if changing & set(layer.keys)]
        return (hits[0], hits[-1]) if hits else None

    @torch.no_grad()
    def points(self, stacked: Params, x: Tensor, y: Tensor, batch: int) -> Scores:
        """Mean loss and accuracy of every stacked point: (T,) each."""
        count = len(next(iter(stacked.values())))
        shared = {key: value[0] for key, value in stacked.items()}
        span = self.span(stacked)
        if span is None:
            loss, acc = evaluate_stacked(self.network.model, {k: v[:1] for k, v in stacked.items()}, x, y, batch)
            return loss.expand(count), acc.expand(count)
        first, last = span
        prefix = self.network.segment(INPUT, before(first))
        middle = self.network.segment(after(first), after(last))
        suffix = self.network.segment(after(last), OUTPUT)
        first_outputs = self._first_outputs(first, stacked)
        middle_params = {key: stacked[key] for key in middle.keys}

        def logits(xb: Tensor) -> Tensor:
            z = first_outputs(prefix(shared, xb))
            if self.batched:
                z = vmap(middle)(middle_params, z)
            else:
                z = torch.stack([middle({key: value[i] for key, value in middle_params.items()}, z[i])
                                 for i in range(count)])
            return suffix(shared, z.flatten(0, 1)).unflatten(0, (count, len(xb)))

        return mean_scores((logits(x[start:start + batch]) for start in range(0, len(x), batch)), y)

    def _first_outputs(self, layer: Layer, stacked: Params):
        """h -> (T, B, …) outputs of the first changing layer at every point, through its low-rank basis."""
        rows = torch.cat([stacked[key].flatten(1) for key in layer.keys], 1)
        coeffs, basis = low_rank(rows)
        shapes = [stacked[key].shape[1:] for key in layer.keys]
        sizes = [shape.numel() for shape in shapes]
        params = [dict(zip(("weight", "bias"), (part.reshape(shape) for part, shape in zip(row.split(sizes), shapes))))
                  for row in basis]

        def outputs(h: Tensor) -> Tensor:
            per_basis = torch.stack([functional_call(layer.module, p, (h,)) for p in params])
            return torch.tensordot(coeffs, per_basis, dims=1)

        return outputs

    @torch.no_grad()
    def swaps(self, base: Params, group: str, units: Tensor, t: Tensor, x: Tensor, y: Tensor, batch: int,
              per_chunk: int) -> Scores:
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
                pre = own(base, prefix(base, x[start:start + batch]))
                out = read(base, between(base, pre))
                yield torch.cat([chunk_logits(pre, out, slice(c, c + per_chunk))
                                 for c in range(0, len(units), per_chunk)])

        return mean_scores(batches(), y)
