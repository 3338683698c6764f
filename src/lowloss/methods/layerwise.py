"""The layer-wise route of §4.1, for any chain of dense and conv layers, and §4.2's generalisation to residual
networks: the `*+wa` and `*+bfly` methods.

Route points: Θ_1^AB = Θ^A and Θ_{k+1}^AB = {W_1^B … W_k^B, W_{k+1}^AB, W_{k+2}^A …}, where
W_{k+1}^AB = W_{k+1}^A X_k^A [X_k^B]^+ is A's layer k+1 re-fitted to read B's features (eq. 10,
`adjust_points`). Consecutive points differ only in layers k and k+1, which form a one-hidden-layer
subnetwork whose input is the same at both ends (B's features) and whose output is nearly the same
(A's pre-activations of layer k+2), so a stage is connected by a §3 method:

* `*+bfly`: the subnetwork's butterflies (rows or filters of layer k, biases, columns of layer k+1)
  by linear, arc, or OT and its permutation stage; the last stage goes straight to Θ^B, skipping
  Θ_n^AB (last paragraph of §4.1).
* `*+wa`: layer k's rows by linear, arc or OT, layer k+1 re-fitted at K breakpoints (or at every
  evaluated t) to reproduce A's outputs of layer k+1, plus the extra leg of §3.5 from Θ_k^AB to the
  first adjusted point; then Θ_n^AB -> Θ^B is linear (the loss is convex in the last layer).

"Layer k" is a stage of `Network.stages`: one hidden group in a chain; in a residual network a whole residual
stage (its stream and its blocks' inner groups), which §4.2 asks for — "connect directly the weights on all
the incoming edges, then adjust all the outgoing edges": the stage's tensors move together and the layers
that read its stream (the next stage's first convs, main and shortcut, or the output layer) are re-fitted.
With BatchNorm and `bn_batches`, every point is fitted on with the statistics the evaluation measures on it.

For one hidden layer the route is Θ^A -> Θ_2^AB -> Θ^B: the `*+wa` methods of §3.5, and `linear+bfly`,
`arc+bfly`, `ot+bfly` equal `linear`, `arc`, `ot`. The OT methods' permutation stages come last (`Route`).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache

import torch
from torch import Tensor
from tqdm.auto import tqdm

from lowloss.errors import LowlossError
from lowloss.evaluate.layered import LayerOutputs, layer_basis
from lowloss.methods.adjust import fit_batch, fit_layers, fitting_samples, replace
from lowloss.methods.context import ALL, Context
from lowloss.methods.interpolate import arc_leg
from lowloss.methods.matching import load_matching, sequential_matching
from lowloss.methods.permutation import permutation_legs
from lowloss.nets.batchnorm import BatchNormRefresh
from lowloss.nets.network import INPUT, Network, Stage, after, before
from lowloss.nets.params import Params, stack_params, unstack_params
from lowloss.nets.spec import Spec, permute
from lowloss.paths.legs import Leg, Path, chain, in_stage

GRAM_BUDGET = 1 << 31  # bytes of Gram matrices accumulated in one pass over the data


def split_name(method: str) -> tuple[str, str]:
    """'arc+wa' -> ('arc', 'wa')."""
    first, _, adjustment = method.partition("+")
    if first not in ("linear", "arc", "ot") or adjustment not in ("wa", "bfly"):
        raise LowlossError(f"{method!r} is not a layer-wise method")
    return first, adjustment


def adjust_points(
    network: Network,
    stage: Stage,
    points: list[Params],
    theta_a: Params,
    x: Tensor,
    outputs: LayerOutputs | None = None,
) -> list[Params]:
    """Each point with the layers that read `stage` re-fitted to reproduce Θ^A's outputs of those layers on x.

    The points must share everything before the stage's entry (true within a stage): that prefix runs once
    per batch for all of them. In a chain, `outputs` keeps layer outputs on x from call to call (Θ^A's, which
    every fit reproduces, and the features of the route's points).
    """
    readers = stage.readers
    batch = fit_batch(readers, network.segment(INPUT, before(readers[0]))(theta_a, x[:1]))
    if network.is_chain:
        outputs = outputs or LayerOutputs(network)
        kept_targets = [outputs.output(reader, theta_a, x, batch) for reader in readers]

        def targets(start: int) -> list[Tensor]:
            return [output(start) for output in kept_targets]
    else:
        segments = [network.segment(INPUT, after(reader)) for reader in readers]

        def targets(start: int) -> list[Tensor]:
            return [segment(theta_a, x[start : start + batch]) for segment in segments]

    gram_entries = sum((reader.module.weight[0].numel() + 1) ** 2 for reader in readers)
    per_pass = max(1, GRAM_BUDGET // (8 * gram_entries))
    adjusted = []
    for begin in range(0, len(points), per_pass):
        chunk = points[begin : begin + per_pass]
        inputs = readers_inputs(network, stage, chunk, x, batch, outputs)
        solutions = fit_layers(readers, x, inputs, targets, batch)
        adjusted += [replace(point, solution) for point, solution in zip(chunk, solutions)]
    return adjusted


def readers_inputs(
    network: Network,
    stage: Stage,
    points: list[Params],
    x: Tensor,
    batch: int,
    outputs: LayerOutputs | None = None,
) -> Callable[[int], list[Tensor]]:
    """The input of the stage's readers at each point, on the batch of x that starts at a given sample. In a chain
    (`outputs`) each point's layers come from the kept outputs; where the stage enters through one layer, that
    layer's outputs come from the low-rank basis of the points' parameters (`layer_basis`: two products for the
    points of a straight leg, not one per point)."""
    reader = stage.readers[0]
    if outputs is None:
        prefix = network.segment(INPUT, stage.entry)
        middle = network.segment(stage.entry, before(reader))

        def every_point(start: int) -> list[Tensor]:
            h = prefix(points[0], x[start : start + batch])
            return [middle(point, h) for point in points]

        return every_point
    entering = [layer for layer in network.layers if before(layer) == stage.entry]
    if len(entering) == 1 and len(points) >= 3:  # two points are their own basis
        layer = entering[0]
        stacked = stack_params([{key: point[key] for key in layer.keys} for point in points])
        coeffs, basis = layer_basis(layer, stacked)
        if len(basis) < len(points):
            rest = network.segment(after(layer), before(reader))
            inputs = cache(lambda: outputs.inputs(points[0], layer, x, batch))
            per_basis = [outputs.output(layer, {**points[0], **params}, x, batch, inputs) for params in basis]

            def mixed(start: int) -> list[Tensor]:
                z = torch.tensordot(coeffs, torch.stack([output(start) for output in per_basis]), dims=1)
                return [rest(point, z[i]) for i, point in enumerate(points)]

            return mixed
    per_point = [outputs.inputs(point, reader, x, batch) for point in points]
    return lambda start: [point_inputs(start) for point_inputs in per_point]


class Route:
    """The route's points for one method, fitted on the context's training samples.

    For the OT methods the route runs to B' = Θ^B with every group's units in A's order, matched stage
    by stage as the points are made (each stage matches its groups between its two ends, whose inputs
    are already in the same basis), so that every stage is a plain linear or arc connection of matched
    units; the permutation stages back to Θ^B's own order come at the very end, on B's trained weights.
    Deferring them keeps swap legs away from re-fitted layers, whose least-squares weights can be far
    larger than trained ones (averaging two such units breaks the cancellations they rely on).
    """

    def __init__(
        self, method: str, theta_a: Params, theta_b: Params, ctx: Context, perms: dict[str, Tensor] | None = None
    ):
        self.first, self.adjustment = split_name(method)
        self.network, self.ctx = ctx.network, ctx
        self.theta_a, self.theta_b = theta_a, theta_b
        self.stages = self.network.stages
        needs_data = self.adjustment == "wa" or len(self.stages) > 1
        if needs_data and ctx.data is None:
            raise LowlossError(f"{method} fits weight adjustments on training data: pass --dataset")
        options = ctx.options
        self.x = fitting_samples(ctx.data.x_train, options.wa_samples, options.seed) if needs_data else None
        self.outputs = LayerOutputs(self.network) if self.network.is_chain else None  # on x, for every fit
        self.refresh = (
            BatchNormRefresh(self.network.model, ctx.data.x_train, options.bn_batches, options.seed)
            if ctx.data is not None and options.bn_batches is not None
            else None
        )
        self.reference = self.measured([theta_a])[0]  # the outputs every re-fit reproduces: Θ^A's as evaluated
        self.perms: dict[str, Tensor] = {}
        self.target = theta_b  # Θ^B, or B' once matched
        self.points, self.ends = [theta_a], []
        stages = tqdm(
            enumerate(self.stages),
            total=len(self.stages),
            desc="route",
            unit="stage",
            disable=not options.progress or not needs_data,
        )
        for s, stage in stages:
            last_butterflies = self.adjustment == "bfly" and s == len(self.stages) - 1
            end = self.target if last_butterflies else self._next_point(s)
            if self.first == "ot":
                matched = (
                    {group: perms[group] for group in stage.groups}
                    if perms is not None
                    else sequential_matching(
                        self.points[-1], end, self.stage_units(s).trained(), options.ot_solver, stage.groups
                    )
                )
                end, self.target = (permute(p, self.network.spec, matched) for p in (end, self.target))
                self.perms.update(matched)
            self.ends.append(end)
            if not last_butterflies:  # WA ends at Θ_n^AB then moves the last layer; butterflies skip Θ_n^AB
                self.points.append(end)

    def _next_point(self, s: int) -> Params:
        """Θ_{s+2}^AB: the target's stages up to s, A's readers of stage s re-fitted to read them, A's after."""
        b_keys = {key for stage in self.stages[: s + 1] for key in stage.keys}
        mixed = {key: self.target[key] if key in b_keys else value for key, value in self.theta_a.items()}
        return self.adjusted(s, [mixed])[0]

    def measured(self, points: list[Params]) -> list[Params]:
        """The points as the evaluation sees them: with BatchNorm statistics measured on each when it measures them."""
        if self.refresh is None:
            return points
        stacked = self.refresh(stack_params(points), [None] * len(points), [0.0] * len(points))
        return [unstack_params(stacked, i) for i in range(len(points))]

    def adjusted(self, s: int, points: list[Params]) -> list[Params]:
        """`adjust_points` for stage s, on the points and Θ^A as the evaluation sees them."""
        return adjust_points(self.network, self.stages[s], self.measured(points), self.reference, self.x, self.outputs)

    def stage_units(self, s: int) -> Spec:
        """The spec whose units stage s moves: its tensors' rows (WA) or the butterflies (bfly)."""
        spec = self.network.spec
        return spec.restricted(self.stages[s].keys) if self.adjustment == "wa" else spec


def fitted(ctx: Context) -> dict | None:
    """What a route's matchings depend on besides the endpoints: the route points' fit (None with one
    stage, which matches the endpoints' own layers)."""
    if len(ctx.network.stages) < 2:
        return None
    fit = {
        "dataset": ctx.data.name if ctx.data else None,
        "wa_samples": ctx.options.wa_samples,
        "seed": ctx.options.seed,
    }
    return fit if ctx.options.bn_batches is None else {**fit, "bn_batches": ctx.options.bn_batches}


def build(method: str, theta_a: Params, theta_b: Params, ctx: Context) -> Path:
    """The route of `method` ('linear+wa', 'ot+bfly', …) from Θ^A to Θ^B."""
    first, _ = split_name(method)
    perms = None
    if first == "ot" and ctx.matching is not None:  # checked before any fitting
        perms = load_matching(ctx.matching, method, ctx, theta_b, fitted(ctx))
    route = Route(method, theta_a, theta_b, ctx, perms)
    stages = stage_legs(route)
    if first == "ot":  # B' -> Θ^B, within the last stage: it ends where Θ^B's units take their own order
        stages[-1] += permutation_legs(theta_b, ctx.spec, route.perms)
    return Path([leg for s, stage in enumerate(stages) for leg in in_stage(stage, s + 1)])


def stage_legs(route: Route) -> list[list[Leg]]:
    """The route's legs stage by stage, from Θ^A to its target (Θ^B, or for the OT methods B', Θ^B matched)."""
    stages = [
        wa_stage(route, s, start, end) if route.adjustment == "wa" else bfly_stage(route, s, start, end)
        for s, (start, end) in enumerate(zip(route.points, route.ends))
    ]
    if route.adjustment == "wa":
        stages.append([Leg(route.points[-1], route.target, "last-layer")])
    return stages


def matched_route(method: str, theta_a: Params, theta_b: Params, ctx: Context, perms: dict[str, Tensor]) -> list[Leg]:
    """The legs of an OT route method from Θ^A to Θ^B matched by `perms` (another method's matching may do), without
    the permutation stage: where an aligned curve's bends start."""
    first, _ = split_name(method)
    if first != "ot":
        raise LowlossError(f"{method} does not run to a matched Θ^B; an aligned curve starts on an ot+* route")
    return [leg for s, stage in enumerate(stage_legs(Route(method, theta_a, theta_b, ctx, perms))) for leg in stage]


def route_matching(
    method: str, theta_a: Params, theta_b: Params, ctx: Context
) -> tuple[dict[str, Tensor], dict | None]:
    """The matchings a route method uses, for `lowloss match`, with what they depend on."""
    return Route(method, theta_a, theta_b, ctx).perms, fitted(ctx)


def bfly_stage(route: Route, s: int, start: Params, end: Params) -> list[Leg]:
    """Stage s of a Butterfly method: the subnetwork's butterflies by a straight line (OT's are matched) or arcs."""
    name = f"s{s + 1}-{route.first}"
    if route.first == "arc":
        return [arc_leg(start, end, route.network.spec, name, route.stages[s].groups)]
    return [Leg(start, end, name)]


def wa_stage(route: Route, s: int, start: Params, end: Params) -> list[Leg]:
    """Stage s of a Weight Adjustment method: the stage's rows move (straight, OT's matched, or by arcs), the
    layers reading it are re-fitted along them; the adjusted point at t = 1 is the next route point itself."""
    stage = route.stages[s]
    target = {**start, **{key: end[key] for key in stage.keys}}
    if route.first == "arc":
        moving = arc_leg(start, target, route.stage_units(s), "arc", stage.groups)
    else:
        moving = Leg(start, target, route.first)

    def adjusted(t: Tensor) -> list[Params]:
        stacked = moving.at(t)
        return route.adjusted(s, [unstack_params(stacked, i) for i in range(len(t))])

    breakpoints = route.ctx.options.wa_breakpoints
    prefix = f"s{s + 1}-wa"
    if breakpoints == ALL:  # re-fitted at every evaluated t, as the authors' code does
        start_point = adjusted(torch.zeros(1, dtype=torch.float64))[0]
        return [
            Leg(start, start_point, f"{prefix}-start"),
            Leg(start_point, end, f"{prefix}-all", fn=lambda t: stack_params(adjusted(t))),
        ]
    points = adjusted(torch.linspace(0, 1, breakpoints, dtype=torch.float64)[:-1])
    return chain([start, *points, end], [f"{prefix}-start", *(f"{prefix}-{k}" for k in range(1, breakpoints))])
