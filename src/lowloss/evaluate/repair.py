"""REPAIR (Jordan et al., ICLR 2023): every path point's pre-activations renormalised to its leg's ends.

Mixing two networks' units shrinks the variance of a layer's outputs (unit pairs that are not perfectly
correlated partly cancel), and the shrinkage compounds layer after layer: the midpoint's last layers see
collapsed, near-constant inputs. REPAIR measures each channel's mean and standard deviation at both
ends of a leg and at the point, on one fixed set of training samples, and moves the point's channel to
(1 - t) μ_start + t μ_end and (1 - t) σ_start + t σ_end, one layer after the other (a corrected layer
changes what the next one sees). The correction is an affine map per channel, fused into the layer's
scale and bias: a repaired point is an ordinary network, evaluated like any other.

Where it acts: in a network with normalisation layers, on every norm layer's output (BatchNorm, or the
per-channel affine of a GroupNorm/LayerNorm), the pre-activation its nonlinearity or residual sum reads;
otherwise on every dense or conv layer's output except the network's output (the logits). A layer without
a bias (the paper's fc3) has nowhere to hold a shift: it gets the scale alone, which still sets the
deviation (the collapse) but leaves the mean at the scaled mean. At t = 0 and
t = 1 the point is its leg's end, measured exactly like it, so the scale is 1 and the shift 0: the
identity, bit for bit. The authors publish notebooks for fixed models only; this works on any spec'd
network, hence written here.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.func import functional_call

from lowloss.errors import LowlossError
from lowloss.nets.batchnorm import BatchNormRefresh, fixed_samples
from lowloss.nets.network import Network
from lowloss.nets.params import Params, unstack_params
from lowloss.paths.legs import Leg

NORMS = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm)
Stats = dict[str, tuple[Tensor, Tensor]]
"""Per site: each channel's mean and standard deviation on the repair samples."""


def repair_sites(network: Network) -> list[str]:
    """The modules whose outputs REPAIR renormalises, in forward order (see the module docstring)."""
    modules = dict(network.model.named_modules())
    norms = [name for name, module in modules.items() if isinstance(module, NORMS)]
    if norms:
        for name in norms:
            if getattr(modules[name], "weight", None) is None or modules[name].bias is None:
                raise LowlossError(f"{name}: REPAIR needs a norm layer with a scale and a shift (affine=True)")
        return norms
    return [
        name
        for name, module in modules.items()
        if isinstance(module, (nn.Linear, nn.Conv2d))
        and network.spec.axes.get(f"{name}.weight", (None,))[0] is not None
    ]


def channel_stats(output: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and standard deviation of each channel (axis 1) over the samples and positions."""
    dims = [d for d in range(output.dim()) if d != 1]
    var, mean = torch.var_mean(output, dim=dims, correction=0)
    return mean, var.sqrt()


def _along(vector: Tensor, like: Tensor, axis: int) -> Tensor:
    """A per-channel vector shaped to broadcast along `axis` of `like` (0 of a weight, 1 of an output)."""
    shape = [1] * like.dim()
    shape[axis] = -1
    return vector.reshape(shape)


class Repair:
    """Applies REPAIR to stacked points, given each point's leg and t.

    `before` is what the evaluator does to a point before repairing it (BatchNorm statistics measured on
    it); the leg's ends get the same, so that t = 0 and 1 stay the identity.
    """

    def __init__(
        self, network: Network, x_train: Tensor, batches: int, seed: int = 0, before: BatchNormRefresh | None = None
    ):
        if batches < 1:
            raise LowlossError(f"--repair-batches must be at least 1, got {batches}")
        self.sites = repair_sites(network)
        self.x = fixed_samples(x_train, batches, seed)
        self.model = copy.deepcopy(network.model).eval()
        self.before = before
        self._targets: dict[str, tuple[Tensor, Tensor]] | None = None
        self._measured: Stats = {}
        self._applied: dict[str, tuple[Tensor, Tensor]] = {}
        modules = dict(self.model.named_modules())
        for name in self.sites:
            modules[name].register_forward_hook(self._hook(name))

    @property
    def samples(self) -> int:
        return len(self.x)

    def _hook(self, name: str):
        def hook(module: nn.Module, inputs, output: Tensor) -> Tensor | None:
            mean, std = channel_stats(output)
            if self._targets is None:
                self._measured[name] = (mean, std)
                return None
            target_mean, target_std = self._targets[name]
            scale = torch.where(std > 0, target_std / std, 1.0)  # a constant channel keeps its scale
            shift = target_mean - scale * mean if module.bias is not None else torch.zeros_like(mean)
            self._applied[name] = (scale, shift)
            return output * _along(scale, output, 1) + _along(shift, output, 1)

        return hook

    @torch.no_grad()
    def stats(self, params: Params) -> Stats:
        """Every site's channel statistics of one network on the repair samples."""
        self._targets, self._measured = None, {}
        functional_call(self.model, params, (self.x,))
        return self._measured

    @torch.no_grad()
    def repaired(self, params: Params, start: Stats, end: Stats, t: float) -> Params:
        """One point with every site's output moved to the interpolated statistics of its leg's ends."""
        self._targets = {
            name: tuple((1 - t) * a + t * b for a, b in zip(start[name], end[name])) for name in self.sites
        }
        self._applied = {}
        functional_call(self.model, params, (self.x,))
        self._targets = None
        out = dict(params)
        for name, (scale, shift) in self._applied.items():
            weight = params[f"{name}.weight"]
            out[f"{name}.weight"] = _along(scale, weight, 0) * weight
            if f"{name}.bias" in params:
                out[f"{name}.bias"] = scale * params[f"{name}.bias"] + shift
        return out

    def __call__(self, stacked: Params, legs: Sequence[Leg], ts: Sequence[float]) -> Params:
        """The stacked points (T, …), point i on leg legs[i] at ts[i], each repaired."""
        ends: dict[int, tuple[Stats, Stats]] = {}
        out = {key: value.clone() for key, value in stacked.items()}
        for index, (leg, t) in enumerate(zip(legs, ts)):
            if id(leg) not in ends:
                ends[id(leg)] = tuple(self.stats(self._prepared(params)) for params in (leg.start, leg.end))
            point = self.repaired(unstack_params(stacked, index), *ends[id(leg)], float(t))
            for key, value in point.items():
                out[key][index] = value
        return out

    def _prepared(self, params: Params) -> Params:
        params = {key: value.to(self.x.device) for key, value in params.items()}
        if self.before is None:
            return params
        single = {key: value[None] for key, value in params.items()}
        return unstack_params(self.before(single, [None], [0.0]), 0)
