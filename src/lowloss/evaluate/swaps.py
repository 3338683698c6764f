"""Swap legs of a chain network, incrementally: many legs of one permutation stage from one pass of its base.

A swap leg's point differs from the stage's base network in two units u, v of one group: two rows (or
filters) of the layer computing the group, mixed, and the same two columns (or kernel slices) of the
layer reading it. The layers up to the group's own run once per data batch for the base (on a block of
samples every leg of the stage shares), or are read from the stage's start where the evaluation kept its
outputs (`StartOutputs`); the two changed units' pre-activations are mixes of the base's;
and since the reader's mixed columns are mixes of its base columns c_u, c_v, its output is the base's
plus c_u·δ_u + c_v·δ_v, a rank-two update from the change δ of the two units' inputs to it, for dense
and conv layers alike. Only the layers after the reader run per leg, and only on the samples whose δ is
not zero: where the operations between the group and its reader (ReLU, pooling) leave both units' inputs
as they were, the leg's logits are the base's, exactly, and so are that sample's loss and correctness. A
leg's loss and accuracy are the base's sums corrected on the other samples.

With `screen`, a stage's legs are screened (`MarginBound`): a leg's accuracy is computed exactly, but a sample
goes through the layers after the reader only when a bound on how far the leg moves the reader's output cannot
rule out a change of its predicted class, and only the legs of the stage's lowest accuracy are evaluated in full
(their loss too). A leg of higher accuracy can never be the path's worst point, whose accuracy is no higher than
the stage's lowest (of equal accuracies the loss decides, and every leg at the lowest has its loss): the worst
point is the one the full evaluation finds; the other legs' loss is left out (NaN).

Legs and samples go through the rest of the network in blocks of `BLOCK_BYTES` of activations, and on a
CPU the blocks run side by side on torch's threads, each single-threaded: a block's many small operations
split over threads would each wait for every thread. Image batches run in channels-last memory, where a
CPU's pooling is many times faster.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import vmap

from lowloss.evaluate.layered import Batches
from lowloss.evaluate.scores import KEPT_BYTES, Scores
from lowloss.nets.network import INPUT, OUTPUT, Layer, Network, after, before
from lowloss.nets.params import Params

BLOCK_BYTES = 1 << 25
"""Activations of one block of (leg, sample) rows after the reader on a CPU (32 MiB). On FC3 768-384 and 8192
samples (2 cores), 8 MiB blocks ran a stage 1.3 times slower, 64 and 128 MiB no faster."""
ROW_COPIES = 3
"""Copies of the reader's output one row holds in a block: the updated output, its activation, the next input."""
SCREEN_ROW_BYTES = 64
"""What one (leg, sample) row of a screened block holds: the two units' inputs, mixes and changes, and the change
of the reader's output (about 16 numbers); the few rows that are not certified go on in chunks of their own."""
SCREEN_TOLERANCE = 1e-4
"""How much of a sample's logit gap a certified change must leave, per unit of its largest logit (plus one): room
for the rounding of a full evaluation, which then cannot flip a certified prediction either; near-ties (of
networks whose dead units leave many samples with equal logits) are certified only where a leg widens them."""
RECTIFIERS = (torch.relu, F.relu, "relu", nn.ReLU)
"""Operations after the reader that move each entry by a fraction (0 to 1) of what its input moves."""
RESHAPES = (torch.flatten, "flatten", "view", "reshape", nn.Flatten, nn.Identity)
"""Operations after the reader that move nothing."""
TABLE_BYTES = 1 << 28
"""The most `MarginBound`'s per-unit tables may take (C² entries per unit, C classes): beyond, only the radius."""


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


@dataclass(frozen=True)
class MarginBound:
    """How far a swap leg can move the reader's output without changing a sample's predicted class, when the layers
    after it are ReLUs then linear layers (`RECTIFIERS`, `RESHAPES`), whose product M maps the ReLUs' output to the
    logits (the identity when the reader makes them). Written here: a certificate for this chain is a few lines,
    and no library bounds a rank-two change of one layer's output.

    A change Δz of the reader's output moves the logit gap l_p − l_k by at most ‖w‖ · ‖Δz‖, w = M[p] − M[k] (ReLU
    moves nothing further than its input): the radius every (leg, sample) pair is tested against, with ‖Δz‖ from
    the 2×2 Gram matrix of the two units' columns. The pairs it leaves are tested again, finer, where the tables
    fit `TABLE_BYTES`: Δz = c_u δ_u + c_v δ_v moves the gap by Σ_i w_i s_i Δz_i, s_i in [0, 1] the slope of the
    ReLU's secant (1 without a ReLU), which is at least (w·Δz − Σ_i |w_i Δz_i|) / 2, w·Δz = δ_u w·c_u + δ_v w·c_v
    from a table of every unit's w·c_u, and Σ_i |w_i Δz_i| at most both ‖w‖ ‖Δz‖ and |δ_u| |w|·|c_u| +
    |δ_v| |w|·|c_v| (without a ReLU the move is w·Δz itself)."""

    gaps: Tensor
    """(C, C): ‖M[p] − M[k]‖."""
    along: Tensor | None = None
    """(C, C, n): (M[p] − M[k]) · c_u for every unit u of the group."""
    spread: Tensor | None = None
    """(C, C, n): |M[p] − M[k]| · |c_u|; None without a ReLU."""

    @classmethod
    def of(cls, cut: GroupCut) -> MarginBound | None:
        """The bound for the cut's reader, or None when its layers after the reader are not such a chain or a unit
        feeds the reader more than one input (the change of its output is then not a cheap quadratic form)."""
        if not isinstance(cut.reader.module, nn.Linear) or cut.per_unit != 1:
            return None
        weights, rectified = [], False
        for node in cut.suffix.graph.nodes:
            if node.op in ("placeholder", "output"):
                continue
            target = type(cut.suffix.get_submodule(node.target)) if node.op == "call_module" else node.target
            if target is nn.Linear:
                weights.append(cut.suffix.get_submodule(node.target).weight.detach())
            elif target not in RECTIFIERS + RESHAPES or weights:  # only linear layers after the first
                return None
            rectified = rectified or target in RECTIFIERS
        linear = torch.eye(cut.reader.module.out_features, device=cut.columns.device)
        for weight in weights:
            linear = weight @ linear
        gaps = torch.cdist(linear, linear)
        classes, width = linear.shape
        if classes**2 * (width + len(cut.columns)) * 4 * (1 + rectified) > TABLE_BYTES:  # the rows w and the tables
            return cls(gaps)
        rows = linear[:, None] - linear[None]  # (C, C, out): w for every (p, k)
        spread = rows.abs() @ cut.columns.abs().T if rectified else None
        return cls(gaps, rows @ cut.columns.T, spread)

    def slack(self, logits: Tensor) -> Tensor:
        """(B, C): how far each class's logit may gain on the predicted class's, `SCREEN_TOLERANCE` kept to spare
        (+inf at the predicted class)."""
        top, predicted = logits.max(1)
        spare = SCREEN_TOLERANCE * (1 + logits.abs().max(1, keepdim=True).values)
        slack = top[:, None] - logits - spare
        slack[torch.arange(len(logits)), predicted] = torch.inf
        return slack

    def radii(self, slack: Tensor) -> Tensor:
        """(B,): per sample, the largest change ‖Δz‖ of the reader's output that keeps its predicted class (0 for a
        near-tie), from `slack`."""
        ratio = slack / self.gaps[slack.argmax(1)]
        return ratio.nan_to_num(0.0, posinf=torch.inf, neginf=0.0).min(1).values.clamp_min(0)

    def keeps(self, slack: Tensor, units: Tensor, delta: Tensor, moved: Tensor) -> Tensor:
        """(N,): whether the finer test certifies each of N (leg, sample) pairs: the sample's `slack` (N, C), the
        leg's `units` (N, 2), the change `delta` (N, 2) of their inputs to the reader and its move ‖Δz‖² (N,)."""
        if self.along is None:
            return torch.zeros(len(slack), dtype=torch.bool, device=slack.device)
        predicted, (u, v), (d_u, d_v) = slack.argmax(1), units.T, delta.T[..., None]
        move = d_u * self.along[predicted, :, u] + d_v * self.along[predicted, :, v]  # (N, C): w·Δz
        if self.spread is not None:
            spread = d_u.abs() * self.spread[predicted, :, u] + d_v.abs() * self.spread[predicted, :, v]
            spread = torch.minimum(spread, self.gaps[predicted] * moved.clamp_min(0).sqrt()[:, None])
            move = (move - spread) / 2
        return (slack + move > 0).all(1)


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
    cut: GroupCut,
    units: Tensor,
    t: Tensor,
    x: Tensor,
    y: Tensor,
    batch: int,
    block_bytes: int = BLOCK_BYTES,
    screen: bool = False,
    start: StartOutputs | None = None,
) -> Scores:
    """Mean loss and accuracy at P swap-leg points of a chain network: the base's units units[p] = (u, v) of the
    cut's group trade places a fraction t[p] of the way. Assumes the operations between the group's layer and its
    reader act channel by channel (the evaluator checks one leg against a full pass first). With `screen`, where
    `MarginBound` applies: every leg's accuracy, the loss of the legs of the lowest accuracy only (NaN elsewhere)."""
    bound = MarginBound.of(cut) if screen else None
    if bound is None:
        loss_sum, correct = changes(cut, units, t, references(cut, x, y, batch, None, start), block_bytes, None)
        return loss_sum / len(y), correct / len(y)
    kept = len(x) * 4 * (2 * len(cut.columns) + cut.columns.shape[1]) <= KEPT_BYTES  # pre, inputs, the reader's out
    refs = list(references(cut, x, y, batch, bound, start)) if kept else None
    _, correct = changes(cut, units, t, refs or references(cut, x, y, batch, bound, start), block_bytes, bound)
    lowest = (correct == correct.min()).nonzero()[:, 0]
    loss = torch.full_like(correct, torch.nan)
    again = refs or references(cut, x, y, batch, None, start)
    loss[lowest] = changes(cut, units[lowest], t[lowest], again, block_bytes, None)[0]
    loss[lowest] /= len(y)
    return loss, correct / len(y)


@dataclass(frozen=True)
class StartOutputs:
    """A permutation stage's start on the samples, batch by batch: the group's pre-activations and the reader's
    output. The start is the base with the group's units reordered (`positions[u]`: where it holds the base's unit
    u), so it computes the base's function: the same pre-activations, the reader's output up to the rounding of
    its sum taken in another order. The evaluation has often kept them already (`permutation_legs`)."""

    pre: Batches
    out: Batches
    positions: Tensor


def references(
    cut: GroupCut,
    x: Tensor,
    y: Tensor,
    batch: int,
    bound: MarginBound | None = None,
    start: StartOutputs | None = None,
) -> Iterator[Reference]:
    """The base network on every batch of the samples, computed as they are read (from the stage's `start`'s
    outputs where given)."""
    for first in range(0, len(x), batch):
        rows = slice(first, first + batch)
        if start is None:
            yield Reference.of(cut, cut.own(cut.prefix(x[rows])), y[rows], bound)
        else:
            yield Reference.of(cut, start.pre(first), y[rows], bound, start.out(first), start.positions)


def changes(
    cut: GroupCut,
    units: Tensor,
    t: Tensor,
    refs: Iterable[Reference],
    block_bytes: int,
    bound: MarginBound | None,
) -> tuple[Tensor, Tensor]:
    """Every leg's loss sum and correct count over the samples of `refs` (the loss sum without meaning under a
    `bound`: the samples it certifies are left out)."""
    device = cut.columns.device
    loss_sum = torch.zeros(len(units), dtype=torch.float64, device=device)
    correct = torch.zeros(len(units), dtype=torch.float64, device=device)
    workers = torch.get_num_threads() if device.type == "cpu" else 1
    for ref in refs:
        loss_sum += ref.loss.double().sum()
        correct += ref.correct.double().sum()
        row_bytes = 4 * ROW_COPIES * ref.out[0].numel() if bound is None else SCREEN_ROW_BYTES
        samples = max(1, min(len(ref.y), block_bytes // row_bytes))
        legs = max(1, block_bytes // (row_bytes * samples))
        blocks = [
            (slice(first, first + samples), slice(leg, leg + legs))
            for first in range(0, len(ref.y), samples)
            for leg in range(0, len(units), legs)
        ]

        def change(block: tuple[slice, slice], ref: Reference = ref) -> tuple[Tensor, Tensor]:
            rows, chosen = block
            part = ref.rows(rows)
            if bound is None:
                return part.change(cut, units[chosen], t[chosen])
            return part.screened_change(cut, bound, units[chosen], t[chosen])

        with one_thread_each(min(workers, len(blocks))) as pool:
            deltas = pool.map(change, blocks) if pool else map(change, blocks)
            for (_, chosen), (d_loss, d_correct) in zip(blocks, deltas):
                loss_sum[chosen] += d_loss
                correct[chosen] += d_correct
    return loss_sum, correct


@dataclass(frozen=True)
class Reference:
    """The base network on a batch: the group's pre-activations and the reader's input, units first (n, B, …), so
    that a unit's values lie together; the reader's output; each sample's label, loss and correctness; and, when
    legs are screened, each sample's slack and radius (`MarginBound`)."""

    pre: Tensor
    inputs: Tensor
    out: Tensor
    y: Tensor
    loss: Tensor
    correct: Tensor
    slack: Tensor | None = None
    radius: Tensor | None = None

    @classmethod
    def of(
        cls,
        cut: GroupCut,
        pre: Tensor,
        y: Tensor,
        bound: MarginBound | None = None,
        out: Tensor | None = None,
        positions: Tensor | None = None,
    ) -> Reference:
        """From the group's pre-activations `pre` of a batch: the base's, or with `positions` a reordering's whose
        reader's output `out` is given (`StartOutputs`)."""
        inputs = cut.between(pre)
        out = cut.read(inputs) if out is None else out
        n = len(cut.columns)
        by_unit = [values.unflatten(1, (n, -1)).movedim(1, 0) for values in (pre, inputs)]
        by_unit = [part.contiguous() if positions is None else part.index_select(0, positions) for part in by_unit]
        logits = cut.suffix(channels_last(out))
        if bound is None:
            return cls(*by_unit, out, y, *per_sample(logits, y))
        slack = bound.slack(logits)
        return cls(*by_unit, out, y, *per_sample(logits, y), slack, bound.radii(slack))

    def rows(self, rows: slice) -> Reference:
        return Reference(self.pre[:, rows], self.inputs[:, rows], self.out[rows], *(
            None if values is None else values[rows]
            for values in (self.y, self.loss, self.correct, self.slack, self.radius)
        ))  # fmt: skip

    def deltas(self, cut: GroupCut, units: Tensor, t: Tensor) -> Tensor:
        """(P, B, 2·k, …): what each leg changes the reader's input by, for every sample (units u's k entries,
        then v's)."""
        count, samples = len(units), len(self.y)
        u, v = units.T.contiguous()  # contiguous: on a busy CPU strided indices slowed index_select down
        pre_u, pre_v = (self.pre.index_select(0, w).flatten(2) for w in (u, v))  # (P, B, k…) a unit's entries
        midpoint = bool((t == 0.5).all())  # a swap leg's one evaluated point: both units take the same mix
        if midpoint:
            mixed = (pre_u + pre_v) * 0.5  # (P, B, k…)
        else:
            s = t.reshape(-1, 1, 1)
            mixed = torch.stack([(1 - s) * pre_u + s * pre_v, s * pre_u + (1 - s) * pre_v], dim=2)  # (P, B, 2, k…)
        shape = self.pre.shape[2:]
        mixed = cut.between(mixed.view(count * samples, (1 if midpoint else 2) * shape[0], *shape[1:]))
        kept_u, kept_v = (self.inputs.index_select(0, w).flatten(2) for w in (u, v))
        if midpoint:  # the reader's input from u and v, in the base's columns c_u and c_v
            read_u = read_v = mixed.reshape(count, samples, -1)
        else:
            mixed_u, mixed_v = mixed.reshape(count, samples, 2, -1).unbind(2)
            s = t.reshape(-1, *[1] * (mixed_u.dim() - 1))
            read_u, read_v = (1 - s) * mixed_u + s * mixed_v, s * mixed_u + (1 - s) * mixed_v
        delta = torch.stack([read_u - kept_u, read_v - kept_v], 2)
        shape = self.inputs.shape[2:]  # (k,) or (1, H, W): one unit's part of the reader's input
        return delta.view(count, samples, 2 * shape[0], *shape[1:])

    def change(self, cut: GroupCut, units: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """Each leg's loss sum and correct count minus the base's on these samples: (P,) each."""
        count, samples = len(units), len(self.y)
        delta = self.deltas(cut, units, t)
        active = delta.flatten(2).ne(0).any(2)  # (P, B): samples whose reader output changes
        changed = active.sum(1)
        width = int(changed.max())
        if width == 0:
            zero = torch.zeros(count, dtype=torch.float64, device=self.y.device)
            return zero, zero
        leg, sample = active.nonzero(as_tuple=True)  # each leg's active samples, in order
        slot = torch.arange(len(leg), device=leg.device) - (changed.cumsum(0) - changed)[leg]
        order = torch.zeros(count, width, dtype=torch.int64, device=leg.device)  # padded with sample 0, not valid
        order[leg, slot] = sample
        valid = torch.zeros(count, width, dtype=torch.float64, device=leg.device)
        valid[leg, slot] = 1
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

    def screened_change(self, cut: GroupCut, bound: MarginBound, units: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """Each leg's correct count minus the base's on these samples, (P,), and zeros for the loss: a dense reader
        fed one input per unit moves its output by ‖c_u δ_u + c_v δ_v‖, a quadratic form in (δ_u, δ_v) with the
        Gram matrix of the base's columns c_u, c_v; a sample moved less than its radius keeps its class, so does
        one the bound's finer test keeps, and only the other (leg, sample) pairs run through the layers after the
        reader, flat, without padding."""
        count = len(units)
        delta = self.deltas(cut, units, t).flatten(2)  # (P, B, 2)
        columns = cut.columns[units]  # (P, 2, out)
        gram = columns @ columns.transpose(1, 2)
        d_u, d_v = delta.unbind(2)
        moved = d_u.square() * gram[:, :1, 0] + 2 * d_u * d_v * gram[:, :1, 1] + d_v.square() * gram[:, 1:, 1]
        leg, sample = (moved >= self.radius.square()).nonzero(as_tuple=True)
        kept = bound.keeps(self.slack[sample], units[leg], delta[leg, sample], moved[leg, sample])
        leg, sample = leg[~kept], sample[~kept]
        d_correct = torch.zeros(count, dtype=torch.float64, device=self.y.device)
        rows = max(1, BLOCK_BYTES // (4 * ROW_COPIES * self.out[0].numel()))
        for first in range(0, len(leg), rows):
            legs, samples = leg[first : first + rows], sample[first : first + rows]
            weight = cut.reading_weight(units[legs])  # (N, out, 2): as `change` computes it, so rounds alike
            z = cut.corrected(weight, delta[legs, samples][:, None], self.out[samples][:, None])[:, 0]
            _, correct = per_sample(cut.suffix(z), self.y[samples])
            d_correct.index_add_(0, legs, correct.double() - self.correct[samples].double())
        return torch.zeros_like(d_correct), d_correct
