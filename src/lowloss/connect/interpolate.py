"""Linear (eq. 5), arc (eq. 6) and the generalised arc through a bijection ν (eq. 7), neuron by neuron.

The distributional methods of §3.2–3.3 move each hidden unit's butterfly vector from its value in
Θ^A to its value in Θ^B; tensors outside the hidden group (the output bias) are interpolated
linearly. `generalised_arc` is the one formula; `butterfly_leg` turns any such butterfly-level
curve into a `Leg` over full parameter sets, so learned bijections reuse both.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor
from torch.func import vmap

from lowloss.connect.neurons import butterflies, from_butterflies
from lowloss.connect.path import Leg, Path, interpolate
from lowloss.connect.registry import Context, one_hidden_layer, register
from lowloss.spec import Params, Spec

ONE_HIDDEN = "networks with one hidden layer"


def identity(x: Tensor) -> Tensor:
    return x


def generalised_arc(x: Tensor, y: Tensor, t: Tensor, forward: Callable[[Tensor], Tensor] = identity,
                    inverse: Callable[[Tensor], Tensor] = identity) -> Tensor:
    """Eq. (7): ψ(t) = ν⁻¹[cos(πt/2) ν(X) + sin(πt/2) ν(Y)] for every t, row by row.

    x, y: (n, D) samples (one butterfly per row); t: (T,). `forward` = ν is applied once to x and
    once to y, `inverse` = ν⁻¹ once to the (T·n, D) flattened mix. Returns (T, n, D). With ν the
    identity this is Proposition 1's arc; with ν(x) = x − μ it is the arc connection, eq. (6).
    Exact endpoints are not promised here (cos(π/2) is not 0 in floating point): `Leg.at` restores them.
    """
    t = torch.as_tensor(t, dtype=torch.float64, device=x.device).flatten()
    zx, zy = forward(x), forward(y)
    angle = t * (math.pi / 2)
    cos = torch.cos(angle).to(zx)[:, None, None]
    sin = torch.sin(angle).to(zx)[:, None, None]
    mix = cos * zx + sin * zy
    return inverse(mix.flatten(0, 1)).reshape(len(t), *x.shape)


def butterfly_leg(theta_a: Params, theta_b: Params, spec: Spec, group: str,
                  butterflies_at: Callable[[Tensor], Tensor], name: str) -> Leg:
    """A leg whose hidden `group` follows `butterflies_at(t) -> (T, n, D)`; every other tensor is linear.

    The butterfly layout is `neurons.butterflies(·, spec, group)`; pass a sub-spec (e.g. incoming keys
    only) to move only part of each unit. Endpoints are exact through `Leg.at`.
    """
    group_keys = list(dict.fromkeys(key for key, _ in spec.members(group)))

    def write(units: Tensor) -> Params:
        written = from_butterflies(theta_a, spec, group, units)
        return {key: written[key] for key in group_keys}

    def fn(t: Tensor) -> Params:
        others = {key: value for key, value in theta_a.items() if key not in group_keys}
        points = interpolate(others, theta_b, t)
        points.update(vmap(write)(butterflies_at(t)))
        return points

    return Leg(theta_a, theta_b, name, fn)


def arc_leg(theta_a: Params, theta_b: Params, spec: Spec, group: str, name: str = "arc") -> Leg:
    """Eq. (6) on the group's butterflies; μ is the mean butterfly of both networks pooled."""
    x, y = butterflies(theta_a, spec, group), butterflies(theta_b, spec, group)
    mu = torch.cat([x, y]).mean(0)
    return butterfly_leg(theta_a, theta_b, spec, group,
                         lambda t: generalised_arc(x, y, t, lambda v: v - mu, lambda z: z + mu), name)


@register("linear", "straight segment (1-t)Θ^A + tΘ^B, eq. (5)")
def linear_path(theta_a: Params, theta_b: Params, ctx: Context) -> Path:
    return Path([Leg(theta_a, theta_b, "linear")], "linear")


@register("arc", "arc connection of the hidden units' butterflies around their pooled mean, eq. (6)",
          applies=one_hidden_layer, applies_to=ONE_HIDDEN)
def arc_path(theta_a: Params, theta_b: Params, ctx: Context) -> Path:
    return Path([arc_leg(theta_a, theta_b, ctx.spec, ctx.spec.groups[0])], "arc")
