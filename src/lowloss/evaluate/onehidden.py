"""The one-hidden-layer strategy: two exact shortcuts for logits = W2 relu(W1 x + b1) + b2."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call

from lowloss.evaluate.scores import Scores, low_rank, mean_scores
from lowloss.nets.network import Network
from lowloss.nets.params import Params
from lowloss.nets.topology import ONE_HIDDEN


@dataclass(frozen=True)
class OneHiddenForm:
    """A network that computes logits = W2 relu(W1 flatten(x) + b1) + b2, its tensors named by the spec.

    Two fast paths use it. (1) The first layer is linear in (W1, b1): if a chunk of points has
    first-layer parameters of rank r (2 on a straight leg, 3 on an arc), r products with the data give
    every point's pre-activations, instead of T — the first layer is most of the work. (2) Along a
    permutation-stage swap leg only two hidden units change, each a straight mix of two of the base's
    units u, v, so the logits are the base's plus four rank-one terms: O(B·C) per leg, not a forward pass.
    """

    w1: str
    b1: str | None
    w2: str
    b2: str | None

    @classmethod
    def of(cls, network: Network, params: Params, x: torch.Tensor) -> OneHiddenForm | None:
        """The form of `network`, or None when it is not one (checked on inputs x with `params`)."""
        if network.topology != ONE_HIDDEN or not all(isinstance(layer.module, nn.Linear) for layer in network.layers):
            return None
        first, second = network.layers
        form = cls(first.weight, first.bias, second.weight, second.bias)
        model = network.model
        with torch.no_grad():
            stacked = {key: value[None] for key, value in params.items()}
            expected = functional_call(model, params, (x,))
            got = form.logits(stacked, form.pre_activations(*low_rank(form.first_layer(stacked)), x))[0]
        return form if torch.allclose(got, expected, rtol=1e-4, atol=1e-4) else None

    def first_layer(self, stacked: Params) -> torch.Tensor:
        """(T, P1): each point's first-layer parameters as one row."""
        parts = [stacked[self.w1].flatten(1)] + ([stacked[self.b1]] if self.b1 else [])
        return torch.cat(parts, 1)

    def basis_pre_activations(self, basis: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """(r, B, n) hidden pre-activations of the r basis first layers (see `low_rank`)."""
        x1 = x.flatten(1)
        d = x1.shape[1]
        n = basis.shape[1] // (d + 1 if self.b1 else d)
        per_basis = torch.einsum("bd,rnd->rbn", x1, basis[:, : n * d].reshape(len(basis), n, d))
        return per_basis + basis[:, None, n * d :] if self.b1 else per_basis

    def pre_activations(self, coeffs: torch.Tensor, basis: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """(T, B, n) hidden pre-activations of every point: its coefficients times the basis'."""
        return torch.einsum("tr,rbn->tbn", coeffs, self.basis_pre_activations(basis, x))

    def logits_point_by_point(
        self, stacked: Params, coeffs: torch.Tensor, basis: torch.Tensor, x: torch.Tensor
    ) -> torch.Tensor:
        """(T, B, C) logits, each point's (B, n) hidden layer made and consumed in turn.

        A (T, B, n) tensor of every point's hidden layer would go through main memory three times
        (written, rectified, read); one point's at a time stays in cache, which on a CPU is most of
        the fast path's time.
        """
        per_basis = self.basis_pre_activations(basis, x)
        out = []
        for t, point_coeffs in enumerate(coeffs.tolist()):
            hidden = torch.mul(per_basis[0], point_coeffs[0])
            for part, coeff in zip(per_basis[1:], point_coeffs[1:]):
                hidden.add_(part, alpha=coeff)
            logits = torch.relu_(hidden) @ stacked[self.w2][t].T
            out.append(logits + stacked[self.b2][t] if self.b2 else logits)
        return torch.stack(out)

    def logits(self, stacked: Params, hidden: torch.Tensor) -> torch.Tensor:
        """(T, B, C) logits from pre-activations (T, B, n), overwritten by their ReLU, and each point's output layer."""
        out = torch.relu_(hidden) @ stacked[self.w2].transpose(1, 2)
        return out + stacked[self.b2][:, None, :] if self.b2 else out

    @torch.no_grad()
    def evaluate(
        self,
        stacked: Params,
        x: torch.Tensor,
        y: torch.Tensor,
        batch: int,
        factors: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> Scores:
        """Like `evaluate_stacked`, with the first layer computed once per basis point.

        `factors` = `low_rank(self.first_layer(stacked))`, when the caller evaluates several splits.
        """
        coeffs, basis = factors or low_rank(self.first_layer(stacked))
        return mean_scores(
            (self.logits_point_by_point(stacked, coeffs, basis, x[s : s + batch]) for s in range(0, len(x), batch)), y
        )

    def swap_logits(
        self, base: Params, hidden: torch.Tensor, logits: torch.Tensor, units: torch.Tensor, t: torch.Tensor
    ) -> torch.Tensor:
        """(P, B, C) logits at P points: base units units[p] = (u, v) trade places, a fraction t[p] of the way."""
        u, v = units.T.contiguous()  # contiguous indices: strided ones gather slower on a busy CPU
        h_u, h_v = hidden[:, u].T, hidden[:, v].T  # (P, B)
        readout = base[self.w2].T
        c_u, c_v = readout[u], readout[v]  # (P, C)
        s = t[:, None]
        acts = torch.stack(
            [
                torch.relu((1 - s) * h_u + s * h_v),
                torch.relu((1 - s) * h_v + s * h_u),
                -torch.relu(h_u),
                -torch.relu(h_v),
            ],
            dim=2,
        )  # (P, B, 4)
        weights = torch.stack([(1 - s) * c_u + s * c_v, (1 - s) * c_v + s * c_u, c_u, c_v], dim=1)  # (P, 4, C)
        return torch.baddbmm(logits.expand(len(units), -1, -1), acts, weights)

    @torch.no_grad()
    def evaluate_swaps(
        self,
        base: Params,
        units: torch.Tensor,
        t: torch.Tensor,
        x: torch.Tensor,
        y: torch.Tensor,
        batch: int,
        per_chunk: int,
    ) -> Scores:
        """Loss and accuracy at P swap-leg points from one forward pass of the base per data batch."""
        stacked = {key: value[None] for key, value in base.items()}
        coeffs, basis = low_rank(self.first_layer(stacked))

        def batches():
            for start in range(0, len(x), batch):
                hidden = self.pre_activations(coeffs, basis, x[start : start + batch])
                logits = self.logits(stacked, hidden.clone())[0]
                yield torch.cat(
                    [
                        self.swap_logits(base, hidden[0], logits, units[c : c + per_chunk], t[c : c + per_chunk])
                        for c in range(0, len(units), per_chunk)
                    ]
                )

        return mean_scores(batches(), y)
