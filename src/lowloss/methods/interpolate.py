"""Linear (eq. 5), arc (eq. 6) and the generalised arc through a bijection ν (eq. 7), unit by unit.

The distributional methods move each hidden unit's vector from its value in Θ^A to its value in Θ^B;
tensors outside every unit (the output bias) are interpolated linearly. `generalised_arc` is the one
formula; `units_leg` turns unit-level curves of one or more groups into a `Leg` over full parameter
sets, so arcs, learned bijections and the layer-wise stages share it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.func import vmap

from lowloss.methods.context import Context
from lowloss.methods.neurons import butterflies, from_butterflies
from lowloss.nets.params import Params
from lowloss.nets.spec import Spec
from lowloss.paths.legs import Leg, Path, interpolate


def identity(x: Tensor) -> Tensor:
    return x


def generalised_arc(
    x: Tensor,
    y: Tensor,
    t: Tensor,
    forward: Callable[[Tensor], Tensor] = identity,
    inverse: Callable[[Tensor], Tensor] = identity,
) -> Tensor:
    """Eq. (7): ψ(t) = ν⁻¹[cos(πt/2) ν(X) + sin(πt/2) ν(Y)] for every t, row by row.

    x, y: (n, D) samples (one unit per row); t: (T,). `forward` = ν is applied once to x and once to
    y, `inverse` = ν⁻¹ once to the (T·n, D) flattened mix. Returns (T, n, D). With ν the identity this
    is Proposition 1's arc; with ν(x) = x − μ it is the arc connection, eq. (6).
    Exact endpoints are not promised here (cos(π/2) is not 0 in floating point): `Leg.at` restores them.
    """
    t = torch.as_tensor(t, dtype=torch.float64, device=x.device).flatten()
    zx, zy = forward(x), forward(y)
    angle = t * (math.pi / 2)
    cos = torch.cos(angle).to(zx)[:, None, None]
    sin = torch.sin(angle).to(zx)[:, None, None]
    mix = cos * zx + sin * zy
    return inverse(mix.flatten(0, 1)).reshape(len(t), *x.shape)


@dataclass(frozen=True)
class UnitCurve:
    """The units of `group`, as `spec` lays them out (a sub-spec moves part of each unit), following
    `at(t) -> (T, n, D)`."""

    spec: Spec
    group: str
    at: Callable[[Tensor], Tensor]

    @property
    def keys(self) -> list[str]:
        return list(dict.fromkeys(key for key, _ in self.spec.members(self.group)))


def units_leg(theta_a: Params, theta_b: Params, curves: Sequence[UnitCurve], name: str) -> Leg:
    """A leg on which every curve's units follow it and every other tensor is linear; exact endpoints
    through `Leg.at`."""
    moved = {key for curve in curves for key in curve.keys}

    def fn(t: Tensor) -> Params:
        points = interpolate({key: value for key, value in theta_a.items() if key not in moved}, theta_b, t)
        for curve in curves:

            def write(units: Tensor, curve: UnitCurve = curve) -> Params:
                written = from_butterflies(theta_a, curve.spec, curve.group, units)
                return {key: written[key] for key in curve.keys}

            points.update(vmap(write)(curve.at(t)))
        return points

    return Leg(theta_a, theta_b, name, fn)


def arc_curve(theta_a: Params, theta_b: Params, spec: Spec, group: str) -> UnitCurve:
    """Eq. (6) on the group's units as `spec` lays them out; μ is their mean over both networks pooled."""
    x, y = butterflies(theta_a, spec, group), butterflies(theta_b, spec, group)
    mu = torch.cat([x, y]).mean(0)
    return UnitCurve(spec, group, lambda t: generalised_arc(x, y, t, lambda v: v - mu, lambda z: z + mu))


def unit_partition(spec: Spec, groups: Sequence[str] | None = None) -> list[tuple[Spec, str]]:
    """Every hidden group (or just `groups`, the others taken as fixed) with the tensors that make up its units,
    each tensor in exactly one group.

    A group's units are its incoming rows (filters) and biases; the last group's units also carry the
    output layer's columns, whose rows are the classes rather than exchangeable units. With one hidden
    group these are the butterflies of §3.
    """
    groups = spec.groups if groups is None else list(groups)
    fixed = [group for group in spec.groups if group not in groups]
    return [(spec.aligned(group, [*fixed, *groups[:k]]), group) for k, group in enumerate(groups)]


def arc_leg(
    theta_a: Params, theta_b: Params, spec: Spec, name: str = "arc", groups: Sequence[str] | None = None
) -> Leg:
    """Eq. (6) on every group's units (or those of `groups`) at once, each group around its own pooled mean.

    BatchNorm's running statistics are not part of a unit: they go straight (an arc of variances can leave
    [0, ∞)), and `--bn-batches` measures them again at every point anyway.
    """
    return units_leg(
        theta_a,
        theta_b,
        [arc_curve(theta_a, theta_b, part, group) for part, group in unit_partition(spec.trained(), groups)],
        name,
    )


def linear_path(method: str, theta_a: Params, theta_b: Params, ctx: Context) -> Path:
    return Path([Leg(theta_a, theta_b, "linear")])


def arc_path(method: str, theta_a: Params, theta_b: Params, ctx: Context) -> Path:
    """Arc of §3.2 on all layers at once (§5.2: no layer-wise stages)."""
    return Path([arc_leg(theta_a, theta_b, ctx.spec)])
