"""The one list of connection methods: name, what it does, what it reads, where it applies, who builds it.

Everything that names methods reads this table: `lowloss connect` and `lowloss methods`, the config
validation and the workflow's inputs (rules/common.smk). It imports no torch, so listing and
validating methods is instant; a method's builder (`module:function`) is imported when it is built.
Adding a method is adding its line here (and the builder it names).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from lowloss.errors import LowlossError, unknown_name
from lowloss.nets.architectures import ARCHITECTURES
from lowloss.nets.topology import ANY, INCLUDES, ONE_HIDDEN, STAGED

if TYPE_CHECKING:
    from lowloss.methods.context import Context
    from lowloss.nets.network import Network
    from lowloss.nets.params import Params
    from lowloss.paths.legs import Path

FILE_INPUTS = ("connector", "curve", "matching")
"""Fitted files a method can read besides its endpoints, each made by its own command."""
OPTIONS = ("wa_breakpoints", "wa_samples", "allow_seen", "repair_batches", "wm_sweeps")
"""Options of `lowloss connect` that only some methods read (each method's `options` say which): given to
another method they are refused, never ignored."""


@dataclass(frozen=True)
class CurveKind:
    """A Garipov et al. curve: its family and control points (both endpoints included); `align`, the method whose
    matching first puts Θ^B's units in Θ^A's order (None: Θ^B as it is; the path then ends with that matching's
    permutation stage, as the OT methods' do); `start`, the path between Θ^A and that Θ^B on whose points the
    bends start (`straight`: Garipov et al.'s start, `arc`, or an OT route method)."""

    family: str
    points: int
    align: str | None = None
    start: str = "straight"


CURVES = {
    "garipov-polychain-3": CurveKind("polychain", 3),
    "garipov-polychain-5": CurveKind("polychain", 5),
    "garipov-bezier-3": CurveKind("bezier", 3),
    "aligned-polychain-3": CurveKind("polychain", 3, align="ot+wa"),
    "ot+wa+polychain-3": CurveKind("polychain", 3, align="ot+wa", start="ot+wa"),
}
"""Curve methods -> their kind: Garipov et al.'s baselines, then curves between aligned networks (Tatro et al.
2020), started on the straight segment or on the `ot+wa` route."""
CURVE_STARTS = ("straight", "arc")
"""Starts of a curve's bends besides the OT route methods."""

FLOWS = {
    "realnvp-flow": ("realnvp", "flow"),
    "iaf-flow": ("iaf", "flow"),
    "realnvp-bijection": ("realnvp", "bijection"),
}
"""Learned connections (§3.3): method -> (ν's architecture, training procedure)."""

REPAIR = "+repair"
"""Suffix of any method's REPAIR variant: the same path, each evaluated point renormalised (evaluate/repair.py)."""

FIRST_LAYERS = {
    "linear": "straight",
    "arc": "arcs around their pooled mean, eq. (6)",
    "ot": "OT matching, a straight leg and the permutation stage",
}


@dataclass(frozen=True)
class Method:
    """A connection method. `needs` are files it cannot do without; `accepts` files it computes itself
    when not given (an OT matching); `matcher` computes that matching, `settings` (a function of the
    context) says what it depends on besides the endpoints, as its file records it; `options` the OPTIONS it
    reads."""

    name: str
    description: str
    builder: str
    applies_to: str = ANY
    needs: tuple[str, ...] = ()
    accepts: tuple[str, ...] = ()
    matcher: str | None = None
    settings: str | None = None
    repair: bool = False
    options: tuple[str, ...] = ()

    @property
    def base_name(self) -> str:
        """The method that builds the path (the name without `+repair`); fitted files are made for it."""
        return self.name.removesuffix(REPAIR) if self.repair else self.name

    @property
    def inputs(self) -> tuple[str, ...]:
        """Every fitted file the method reads (the workflow makes them all)."""
        return self.needs + self.accepts

    def refuse_unused(self, given: list[str]) -> None:
        """Raise a one-line error for the first of `given` (OPTIONS and FILE_INPUTS) the method does not read."""
        for option in given:
            if option not in self.options + self.inputs:
                readers = [m.name for m in METHODS.values() if option in m.options + m.inputs]
                where = ", ".join(readers) if readers else f"*{REPAIR} methods"
                flag = "--" + option.replace("_", "-")
                raise LowlossError(f"{flag} applies to {where}; method {self.name!r} does not read it")

    def applies(self, topology: str) -> bool:
        """Whether the method runs on a network of `topology` (ANY, STAGED, LAYERED or ONE_HIDDEN)."""
        return topology in INCLUDES[self.applies_to]

    def applies_to_architecture(self, arch: str) -> bool:
        return self.applies(ARCHITECTURES[arch].topology)

    def check(self, network: Network, arch: str, context: Context) -> None:
        """Raise a one-line error when the method cannot run on this network or lacks an input."""
        if not self.applies(network.topology):
            raise LowlossError(f"method {self.name!r} applies to {self.applies_to}, not to {arch!r}")
        for need in self.needs:
            if getattr(context, need) is None:
                raise LowlossError(f"method {self.name!r} needs --{need} (see `lowloss methods`)")

    def build(self, theta_a: Params, theta_b: Params, context: Context) -> Path:
        """The method's path from Θ^A to Θ^B (its builder is imported now)."""
        path = _function(self.builder)(self.base_name, theta_a, theta_b, context)
        path.method = self.name
        return path

    def match(self, theta_a: Params, theta_b: Params, context: Context) -> tuple[dict, dict | None]:
        """The OT matching the method uses ({group: perm}) and what it depends on besides the endpoints."""
        self.require_matcher()
        return _function(self.matcher)(self.base_name, theta_a, theta_b, context)

    def require_matcher(self) -> None:
        """Raise a one-line error when the method uses no matching (naming those that do)."""
        if self.matcher is None:
            raise LowlossError(
                f"method {self.name!r} uses no matching (methods that do: "
                f"{', '.join(name for name, m in METHODS.items() if m.matcher)})"
            )

    def matching_settings(self, context: Context) -> dict | None:
        """What the method's matching depends on besides the endpoints (None: nothing), as its file records it."""
        return None if self.settings is None else _function(self.settings)(context)


def _function(reference: str):
    """The function named by 'module:function', imported now."""
    module, _, function = reference.partition(":")
    return getattr(importlib.import_module(module), function)


def _catalogue() -> dict[str, Method]:
    layerwise = "lowloss.methods.layerwise:build"
    methods = [
        Method("linear", "straight segment (1-t)Θ^A + tΘ^B, eq. (5)", "lowloss.methods.interpolate:linear_path"),
        Method(
            "arc",
            "arc, eq. (6), of every hidden group's units around their pooled mean (all layers at once; "
            "the output layer moves with the last group's units, BatchNorm's statistics go straight)",
            "lowloss.methods.interpolate:arc_path",
        ),
        Method(
            "ot",
            "OT matching of every hidden group in turn, a straight leg to the matched Θ^B, then one leg per "
            "unit swap (§3.4)",
            "lowloss.methods.permutation:ot_path",
            ANY,
            accepts=("matching",),
            matcher="lowloss.methods.permutation:ot_matching",
        ),
        Method(
            "weight-matching",
            "Git Re-Basin's weight matching (permutation coordinate descent over every group), "
            "a straight leg to the matched Θ^B, then one leg per unit swap",
            "lowloss.methods.weight_matching:weight_matching_path",
            ANY,
            accepts=("matching",),
            matcher="lowloss.methods.weight_matching:weight_matching_matcher",
            settings="lowloss.methods.weight_matching:matching_settings",
            options=("wm_sweeps",),
        ),
    ]
    for first, how in FIRST_LAYERS.items():
        ot = (
            {
                "accepts": ("matching",),
                "matcher": "lowloss.methods.layerwise:route_matching",
                "settings": "lowloss.methods.layerwise:fitted",
            }
            if first == "ot"
            else {}
        )
        fitted = ("wa_samples",)  # the route's least squares (deep networks' bfly stages too)
        methods.append(
            Method(
                f"{first}+wa",
                f"layer-wise route (§4.1, §4.2); each stage moves a layer's (or a "
                f"residual stage's) rows ({how}) and re-fits the layers reading it by least squares, "
                f"eq. (10)",
                layerwise,
                STAGED,
                options=("wa_breakpoints", *fitted),
                **ot,
            )
        )
        methods.append(
            Method(
                f"{first}+bfly",
                f"layer-wise route (§4.1, §4.2); each stage moves the butterflies of "
                f"a layer (or a residual stage) and the layers reading it ({how})",
                layerwise,
                STAGED,
                options=fitted,
                **ot,
            )
        )
    for name in FLOWS:
        flow, procedure = FLOWS[name]
        objective = (
            "the midpoint loss of V's pairs, eq. (8)" if procedure == "bijection" else "likelihood on V's neurons"
        )
        label = {"realnvp": "a RealNVP", "iaf": "an IAF"}[flow]
        methods.append(
            Method(
                name,
                f"generalised arc, eq. (7), through {label} ν fitted by {objective}",
                "lowloss.methods.flows.connector:learned_path",
                ONE_HIDDEN,
                needs=("connector",),
                options=("allow_seen",),
            )
        )
    for name, kind in CURVES.items():
        methods.append(
            Method(
                name,
                curve_description(kind),
                "lowloss.methods.curves:curve_path",
                STAGED if kind.align in ROUTE_METHODS or kind.start in ROUTE_METHODS else ANY,
                needs=("curve",),
            )
        )
    return {method.name: method for method in methods}


def curve_description(kind: CurveKind) -> str:
    what = f"Garipov et al.'s {kind.family} curve with {kind.points} control points, trained"
    if kind.align is None:
        return f"{what} (the baseline)"
    return (
        f"{what} between Θ^A and Θ^B aligned by {kind.align}'s matching, its bends started on the "
        f"{'straight segment' if kind.start == 'straight' else kind.start + ' path'}; then the permutation stage"
    )


ROUTE_METHODS = tuple(f"{first}+{adjustment}" for adjustment in ("wa", "bfly") for first in FIRST_LAYERS)
"""The layer-wise methods of §4.1 (their paths run through the route points Θ_k^AB)."""
METHODS: dict[str, Method] = _catalogue()
WA_METHODS = ROUTE_METHODS[: len(FIRST_LAYERS)]


def get_method(name: str) -> Method:
    """The method `name`, or the REPAIR variant of one (`<method>+repair`); an unknown name gets the closest
    known one suggested."""
    base = name.removesuffix(REPAIR)
    if base not in METHODS:
        raise unknown_name("method", base, METHODS)
    method = METHODS[base]
    if base == name:
        return method
    return replace(
        method,
        name=name,
        repair=True,
        description=f"{method.description}; every point renormalised by REPAIR",
        options=(*method.options, "repair_batches"),
    )
