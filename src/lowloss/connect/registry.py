"""Method name -> how to build its path, what it needs and which architectures it applies to.

Method modules register themselves with `@register(...)`; `lowloss.connect` imports them all, so
`get_method` sees the complete registry.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from lowloss.artifacts import Artifact
from lowloss.connect.path import Path
from lowloss.data import Dataset
from lowloss.errors import LowlossError
from lowloss.spec import Params, Spec


@dataclass
class Context:
    """What a method may use besides the two endpoints.

    `model` is an instance of the endpoints' architecture (for the spec and functional calls),
    `data` the dataset (weight adjustment reads its training split), `options` method options
    (e.g. wa_breakpoints, wa_samples, ot_solver), the endpoints' own artifacts (their sidecars carry
    the hashes that connectors and curves are checked against), and the fitted files a method needs:
    a connector (learned ν), a curve (Garipov), a matching (OT, computed once per pair).
    """

    model: nn.Module
    spec: Spec
    data: Dataset | None = None
    options: dict = field(default_factory=dict)
    endpoints: tuple[Artifact, Artifact] | None = None
    connector: Artifact | None = None
    curve: Artifact | None = None
    matching: Artifact | None = None

    @property
    def device(self) -> torch.device:
        return self.data.x_train.device if self.data is not None else torch.device("cpu")


Build = Callable[[Params, Params, Context], Path]


def one_hidden_layer(spec: Spec) -> bool:
    """Applies to networks with exactly one hidden-unit group (the paper's §3 setting)."""
    return len(spec.groups) == 1


def any_architecture(spec: Spec) -> bool:
    return True


@dataclass(frozen=True)
class Method:
    """A registered connection method."""

    name: str
    description: str
    build: Build
    needs: tuple[str, ...] = ()
    applies: Callable[[Spec], bool] = any_architecture
    applies_to: str = "any architecture"

    def check(self, spec: Spec, arch: str, context: Context) -> None:
        """Raise a one-line error when the method cannot run on this architecture or lacks an input."""
        if not self.applies(spec):
            raise LowlossError(f"method {self.name!r} applies to {self.applies_to}, not to {arch!r}")
        for need in self.needs:
            if getattr(context, need) is None:
                raise LowlossError(f"method {self.name!r} needs --{need} (see `lowloss methods`)")


METHODS: dict[str, Method] = {}


def register(name: str, description: str, needs: tuple[str, ...] = (),
             applies: Callable[[Spec], bool] = any_architecture,
             applies_to: str = "any architecture") -> Callable[[Build], Build]:
    """Decorator: add a path builder to the registry under `name`."""

    def add(build: Build) -> Build:
        if name in METHODS:
            raise ValueError(f"method {name!r} registered twice")
        METHODS[name] = Method(name, description, build, needs, applies, applies_to)
        return build

    return add


def get_method(name: str) -> Method:
    """The registered method `name`; an unknown name lists the known ones."""
    import lowloss.connect  # noqa: F401  (registers every method)

    if name not in METHODS:
        raise LowlossError(f"unknown method {name!r} (known: {', '.join(sorted(METHODS))})")
    return METHODS[name]
