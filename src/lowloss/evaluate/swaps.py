"""Swap legs of a chain network, incrementally: many legs of one permutation stage from one pass of its base.

A swap leg's point differs from the stage's base network in two units u, v of one group: two rows (or
filters) of the layer computing the group, mixed, and the same two columns (or kernel slices) of the
layer reading it. The layers up to the group's own run once per data batch for the base (on a block of
samples every leg of the stage shares); the two changed units' pre-activations are mixes of the base's;
and since the reader's mixed columns are mixes of its base columns c_u, c_v, its output is the base's
plus c_u·δ_u + c_v·δ_v, a rank-two update from the change δ of the two units' inputs to it, for dense
and conv layers alike. Only the layers after the reader run per leg, and only on the samples whose δ is
not zero: where the operations between the group and its reader (ReLU, pooling) leave both units' inputs
as they were, the leg's logits are the base's, exactly, and so are that sample's loss and correctness. A
leg's loss and accuracy are the base's sums corrected on the other samples.

Legs and samples go through the rest of the network in blocks of `BLOCK_BYTES` of activations, and on a
CPU the blocks run side by side on torch's threads, each single-threaded: a block's many small operations
split over threads would each wait for every thread. Image batches run in channels-last memory, where a
CPU's pooling is many times faster.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import vmap

from lowloss.evaluate.scores import Scores
from lowloss.nets.network import INPUT, OUTPUT, Layer, Network, after, before
from lowloss.nets.params import Params

BLOCK_BYTES = 1 << 25
"""Activations of one block of (leg, sample) rows after the reader on a CPU (32 MiB). On FC3 768-384 and 8192
samples (2 cores), 8 MiB blocks ran a stage 1.3 times slower, 64 and 128 MiB no faster."""
ROW_COPIES = 3
"""Copies of the reader's output one row holds in a block: the updated output, its activation, the next input."""


def apply_weight(layer: Layer, weight: Tensor, inputs: Tensor) -> Tensor:
    """The layer's linear map with another weight and no bias (a correction term)."""
    module = layer.module
    if isinstance(module, nn.Conv2d):
        return F.conv2d(inputs, weight, None, module.stride, module.padding, module.dilation, module.groups)
    return F.linear(inputs, weight)


def channels_last(values: Tensor) -> Tensor:
    """Image batches (N, C, H, W) in channels-last memory (the values and the shape stay as they are)."""
    return values.contiguous(memory_format=torch.channels_last) if values.dim() == 4 else values


def per_sample(logits: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """Cross-entropy and correctness of every row of logits (…, C) against labels y (…).

    With the classes on the leading axis, each step runs over all rows at once: a few times faster on a CPU
    than F.cross_entropy's row-by-row kernel for the few classes a row has (same values up to rounding).
    """
    by_class = logits.flatten(0, -2).T.contiguous()  # (C, R)
    top, predicted = by_class.max(0)
    picked = by_class.gather(0, y.reshape(1, -1))[0]
    loss = (by_class - top).exp_().sum(0).log_().add_(top).sub_(picked)
    return loss.view(y.shape), predicted.view(y.shape) == y


@dataclass(frozen=True)
class GroupCut:
    """A chain network with parameters `base`, cut around one hidden group: the layer computing it, the layer
    reading it, each unit's outgoing weights (`columns`, in `Spec.units` layout), and the stretches before,
    between and after them as modules holding the base's tensors."""

    reader: Layer
    columns: Tensor
    per_unit: int
    prefix: nn.Module
    own: nn.Module
    between: nn.Module
    read: nn.Module
    suffix: nn.Module

    @classmethod
    def of(cls, network: Network, group: str, base: Params) -> GroupCut:
        layer, reader = network.computing(group), network.reading(group)
        cuts = (INPUT, before(layer), after(layer), before(reader), after(reader), OUTPUT)
        columns = network.spec.units(base, reader.weight, 1, group)
        per_unit = base[reader.weight].shape[1] // len(columns)
        return cls(reader, columns, per_unit, *(network.segment(*pair).bound(base) for pair in zip(cuts, cuts[1:])))

    def reading_weight(self, units: Tensor) -> Tensor:
        """The reader's weight restricted to the base's units `units` (P, k): (P, out, k·per_unit, …)."""
        rows = self.columns[units.flatten()].view(*units.shape, self.per_unit, -1)  # (P, k, per_unit, out·…)
        weight = self.reader.module.weight
        return rows.reshape(len(units), -1, *weight.shape[:1], *weight.shape[2:]).movedim(1, 2)

    def corrected(self, weight: Tensor, acts: Tensor, out: Tensor) -> Tensor:
        """The reader's output `out` (P, M, …; overwritten) plus each leg's `weight` (P, …) applied to `acts`."""
        if isinstance(self.reader.module, nn.Linear):
            return out.baddbmm_(acts.flatten(2), weight.transpose(1, 2))
        return out.add_(vmap(lambda w, a: apply_weight(self.reader, w, a))(weight, acts))


@contextmanager
def one_thread_each(workers: int) -> Iterator[ThreadPoolExecutor | None]:
    """A pool of `workers` threads whose torch operations run single-threaded (torch's intra-op threads set to 1
    meanwhile, then restored), or None for one worker."""
    if workers < 2:
        yield None
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with ThreadPoolExecutor(workers) as pool:
            yield pool
    finally:
        torch.set_num_threads(threads)


@torch.no_grad()
def swap_scores(
    cut: GroupCut, units: Tensor, t: Tensor, x: Tensor, y: Tensor, batch: int, block_bytes: int = BLOCK_BYTES
) -> Scores:
    """Mean loss and accuracy at P swap-leg points of a chain network: the base's units units[p] = (u, v) of the
    cut's group trade places a fraction t[p] of the way. Assumes the operations between the group's layer and its
    reader act channel by channel (the evaluator checks one leg against a full pass first)."""
    loss_sum = torch.zeros(len(units), dtype=torch.float64, device=x.device)
    correct = torch.zeros(len(units), dtype=torch.float64, device=x.device)
    workers = torch.get_num_threads() if x.device.type == "cpu" else 1
    for start in range(0, len(x), batch):
        ref = Reference.of(cut, x[start : start + batch], y[start : start + batch])
        loss_sum += ref.loss.double().sum()
        correct += ref.correct.double().sum()
        row_bytes = 4 * ROW_COPIES * ref.out[0].numel()
        samples = max(1, min(len(ref.y), block_bytes // row_bytes))
        legs = max(1, block_bytes // (row_bytes * samples))
        blocks = [
            (slice(first, first + samples), slice(leg, leg + legs))
            for first in range(0, len(ref.y), samples)
            for leg in range(0, len(units), legs)
        ]

        def change(block: tuple[slice, slice], ref: Reference = ref) -> tuple[Tensor, Tensor]:
            rows, chosen = block
            return ref.rows(rows).change(cut, units[chosen], t[chosen])

        with one_thread_each(min(workers, len(blocks))) as pool:
            changes = pool.map(change, blocks) if pool else map(change, blocks)
            for (_, chosen), (d_loss, d_correct) in zip(blocks, changes):
                loss_sum[chosen] += d_loss
                correct[chosen] += d_correct
    return loss_sum / len(y), correct / len(y)


@dataclass(frozen=True)
class Reference:
    """The base network on a batch: the group's pre-activations and the reader's input, units first (n, B, …), so
    that a unit's values lie together; the reader's output; each sample's label, loss and correctness."""

    pre: Tensor
    inputs: Tensor
    out: Tensor
    y: Tensor
    loss: Tensor
    correct: Tensor

    @classmethod
    def of(cls, cut: GroupCut, x: Tensor, y: Tensor) -> Reference:
        pre = cut.own(cut.prefix(x))
        inputs = cut.between(pre)
        out = cut.read(inputs)
        n = len(cut.columns)
        by_unit = (values.unflatten(1, (n, -1)).movedim(1, 0).contiguous() for values in (pre, inputs))
        return cls(*by_unit, out, y, *per_sample(cut.suffix(channels_last(out)), y))

    def rows(self, rows: slice) -> Reference:
        return Reference(self.pre[:, rows], self.inputs[:, rows], self.out[rows], *(
            values[rows] for values in (self.y, self.loss, self.correct)
        ))  # fmt: skip

    def change(self, cut: GroupCut, units: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """Each leg's loss sum and correct count minus the base's on these samples: (P,) each."""
        count, samples = len(units), len(self.y)
        u, v = units.T.contiguous()  # contiguous: on a busy CPU strided indices slowed index_select down
        pre_u, pre_v = (self.pre.index_select(0, w).flatten(2) for w in (u, v))  # (P, B, k…) a unit's entries
        s = t.reshape(-1, 1, 1)
        mixed = torch.stack([(1 - s) * pre_u + s * pre_v, s * pre_u + (1 - s) * pre_v], dim=2)  # (P, B, 2, k…)
        shape = self.pre.shape[2:]
        mixed = cut.between(mixed.view(count * samples, 2 * shape[0], *shape[1:]))
        mixed_u, mixed_v = mixed.reshape(count, samples, 2, -1).unbind(2)  # the reader's input from u and v
        kept_u, kept_v = (self.inputs.index_select(0, w).flatten(2) for w in (u, v))
        s = t.reshape(-1, *[1] * (mixed_u.dim() - 1))
        delta = torch.stack([(1 - s) * mixed_u + s * mixed_v - kept_u, s * mixed_u + (1 - s) * mixed_v - kept_v], 2)
        shape = self.inputs.shape[2:]  # (k,) or (1, H, W): one unit's part of the reader's input
        delta = delta.view(count, samples, 2 * shape[0], *shape[1:])  # what the reader's input changes by
        active = delta.flatten(2).ne(0).any(2)  # (P, B): samples whose reader output changes
        changed = active.sum(1)
        width = int(changed.max())
        if width == 0:
            zero = torch.zeros(count, dtype=torch.float64, device=self.y.device)
            return zero, zero
        order = torch.argsort((~active).to(torch.int8), dim=1, stable=True)[:, :width]  # active samples first
        valid = (torch.arange(width, device=order.device) < changed[:, None]).double()
        picked = (order + samples * torch.arange(count, device=order.device)[:, None]).flatten()
        delta = delta.flatten(0, 1).index_select(0, picked).unflatten(0, (count, width))
        order = order.flatten()

        def gathered(values: Tensor) -> Tensor:
            return values.index_select(0, order).unflatten(0, (count, width))

        z = cut.corrected(cut.reading_weight(units), delta, gathered(self.out))  # the base's weights of u and v
        logits = cut.suffix(channels_last(z.flatten(0, 1))).unflatten(0, (count, width))
        loss, correct = per_sample(logits, gathered(self.y))
        d_loss = ((loss - gathered(self.loss)).double() * valid).sum(1)
        d_correct = ((correct.double() - gathered(self.correct).double()) * valid).sum(1)
        return d_loss, d_correct
