"""The learnable bijection ν of eq. (7) (§3.3): RealNVP and IAF transforms on standardised unit vectors.

ν maps a hidden unit's butterfly vector (standardised with the model set's statistics) to a latent
space where the plain arc of Proposition 1 is used; ψ(t) = ν⁻¹[cos(πt/2) ν(X) + sin(πt/2) ν(Y)].
The transforms are nflows' and keep its contract: `forward` = ν (neuron -> latent) and `inverse` = ν⁻¹,
each returning (outputs, logabsdet).

* `realnvp`: affine couplings (Dinh et al., 2016), one network pass per layer in both directions.
* `iaf`: inverse autoregressive flow (Kingma et al., 2016): ν⁻¹ is one MADE pass per layer, ν is the
  sequential (triangular) solve. Eq. (7) evaluates ν on the 2n endpoint neurons once per connection
  and ν⁻¹ on n neurons at every path point, so the cheap direction is the one used most. The solve
  costs up to D MADE passes per layer (D ≈ 795 for MNIST); `solve_autoregressive` stops as soon as
  the fixed-point iteration stops changing, which is exact for a triangular system. Flow training
  differentiates through those passes (memory ∝ passes × batch), which is why IAF Bijection, which
  would need that on every step, is not offered (as in the paper).

Every layer starts at unit scale and zero shift, so a fresh ν is standardisation followed by a
permutation of coordinates, an affine map: the generalised arc through it is exactly the arc
connection, eq. (6), around V's mean. Fitting therefore starts from Arc.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from nflows.distributions.normal import StandardNormal
from nflows.nn.nets import ResidualNet
from nflows.transforms.autoregressive import MaskedAffineAutoregressiveTransform
from nflows.transforms.base import CompositeTransform, InverseTransform, Transform
from nflows.transforms.coupling import AffineCouplingTransform
from nflows.transforms.permutations import RandomPermutation
from nflows.utils.torchutils import create_alternating_binary_mask
from torch import nn

from lowloss.errors import LowlossError

STD_FLOOR = 1e-6
SCALE_EPS = 1e-3
UNIT_SCALE = math.log(math.expm1(1 - SCALE_EPS))
"""softplus⁻¹(1 − ε): the scale softplus(u) + ε of nflows' autoregressive transform is 1 at u = UNIT_SCALE."""


@dataclass(frozen=True)
class FlowShape:
    """Hyper-parameters that rebuild ν: its type, coupling/autoregressive layers, hidden width, D."""

    type: str
    layers: int
    hidden: int
    features: int


def solve_autoregressive(
    transform: MaskedAffineAutoregressiveTransform, outputs: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Inputs x with transform(x) = outputs, by fixed-point iteration; returns (x, logabsdet, passes).

    nflows' own inverse always runs D passes. Each pass fixes at least one more coordinate of the
    triangular system, and once a pass leaves the iterate unchanged (bit for bit) it is the
    solution, so stopping there is exact and usually needs far fewer than D passes.
    """
    inputs = torch.zeros_like(outputs)
    logabsdet = None
    for passes in range(1, outputs.shape[1] + 1):  # noqa: B007 (the count is returned)
        params = transform.autoregressive_net(inputs)
        new, logabsdet = transform._elementwise_inverse(outputs, params)  # nflows' subclass hook
        converged = torch.equal(new, inputs)
        inputs = new
        if converged:
            break
    return inputs, logabsdet, passes


class FixedPointMAF(MaskedAffineAutoregressiveTransform):
    """nflows' masked affine autoregressive transform with an early-stopping inverse."""

    def inverse(self, inputs: torch.Tensor, context=None) -> tuple[torch.Tensor, torch.Tensor]:
        outputs, logabsdet, _ = solve_autoregressive(self, inputs)
        return outputs, logabsdet


class UnitAffineCoupling(AffineCouplingTransform):
    """nflows' affine coupling with its autoregressive transform's scale, softplus(u) + ε, at 1 for u = 0.

    nflows' coupling scale, sigmoid(u + 2) + ε, never exceeds 1 + ε: every layer can only contract,
    and a stack of them cannot Gaussianise a skewed distribution (see the lognormal test).
    """

    def _scale_and_shift(self, transform_params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        unconstrained_scale = transform_params[:, self.num_transform_features :, ...]
        shift = transform_params[:, : self.num_transform_features, ...]
        return F.softplus(unconstrained_scale + UNIT_SCALE) + SCALE_EPS, shift


def _zero_last(layer: nn.Linear) -> None:
    nn.init.zeros_(layer.weight)
    nn.init.zeros_(layer.bias)


def _coupling_net(hidden: int):
    """Conditioner factory `(in_features, out_features) -> module` whose output starts at zero."""

    def create(in_features: int, out_features: int) -> nn.Module:
        net = ResidualNet(in_features, out_features, hidden_features=hidden, num_blocks=2)
        _zero_last(net.final_layer)
        return net

    return create


def realnvp_layers(shape: FlowShape) -> list[Transform]:
    """Random permutation + affine coupling, `layers` times (masks alternate)."""
    layers: list[Transform] = []
    for i in range(shape.layers):
        mask = create_alternating_binary_mask(shape.features, even=i % 2 == 0)
        layers += [RandomPermutation(shape.features), UnitAffineCoupling(mask, _coupling_net(shape.hidden))]
    return layers


def iaf_layers(shape: FlowShape) -> list[Transform]:
    """Random permutation + IAF layer, `layers` times: ν⁻¹ of each layer is one MADE pass."""
    layers: list[Transform] = []
    for _ in range(shape.layers):
        maf = FixedPointMAF(shape.features, shape.hidden, num_blocks=2)
        final = maf.autoregressive_net.final_layer
        _zero_last(final)
        with torch.no_grad():  # outputs interleave (scale, shift) per feature; scale starts at exactly 1
            final.bias[0::2] = UNIT_SCALE
        layers += [RandomPermutation(shape.features), InverseTransform(maf)]
    return layers


BUILDERS = {"realnvp": realnvp_layers, "iaf": iaf_layers}


class Bijection(nn.Module):
    """ν = flow ∘ standardise, on (…, D) tensors; the standardisation statistics are buffers.

    `forward(x)` = ν(x) and `inverse(z)` = ν⁻¹(z) keep any leading dimensions; `log_prob(x)` is the
    Flow objective, log η(ν(x)) + log|det ∂ν/∂x| with η the standard normal density.
    """

    def __init__(self, shape: FlowShape, mean: torch.Tensor | None = None, std: torch.Tensor | None = None):
        super().__init__()
        if shape.type not in BUILDERS:
            raise LowlossError(f"unknown flow type {shape.type!r} (known: {', '.join(BUILDERS)})")
        if shape.layers < 1 or shape.hidden < 1 or shape.features < 2:
            raise LowlossError(f"flow needs layers >= 1, hidden >= 1 and D >= 2, got {shape}")
        self.shape = shape
        self.register_buffer("mean", torch.zeros(shape.features) if mean is None else mean.detach().clone())
        self.register_buffer("std", torch.ones(shape.features) if std is None else std.detach().clamp_min(STD_FLOOR))
        self.transform = CompositeTransform(BUILDERS[shape.type](shape))
        self.base = StandardNormal([shape.features])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z, _ = self.transform((self._flat(x) - self.mean) / self.std)
        return z.reshape(x.shape)

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        x, _ = self.transform.inverse(self._flat(z))
        return x.reshape(z.shape) * self.std + self.mean

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """(N,) log-density of the rows of x (N, D) under ν's pull-back of the standard normal."""
        z, logabsdet = self.transform((x - self.mean) / self.std)
        return self.base.log_prob(z) + logabsdet - self.std.log().sum()

    def _flat(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.shape.features:
            raise LowlossError(f"ν takes vectors of {self.shape.features} numbers, got shape {tuple(x.shape)}")
        return x.reshape(-1, self.shape.features)
