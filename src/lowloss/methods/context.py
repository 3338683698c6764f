"""What a method may use besides its two endpoints: the network, the data, its options and fitted files.

Importable without torch (the types below are only annotations), so the CLI can show the defaults.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from lowloss.errors import LowlossError

if TYPE_CHECKING:
    import torch

    from lowloss.nets.network import Network
    from lowloss.storage.weights import Artifact
    from lowloss.training.data import Dataset

ALL = "all"
DEFAULT_BREAKPOINTS = ALL
"""Chosen on training data by the rule of scripts/wa_breakpoints.py: the smallest K whose worst train
accuracy is within 0.1 points of re-fitting at every evaluated t, for every `*+wa` method on the default
config's one-hidden and fc3 experiments. No K up to 9 was (fc3's linear+wa lost 0.67 points at K = 9)."""
OT_SOLVERS = ("emd", "scipy")
MAX_SWEEPS = 100
"""Sweeps of weight matching's coordinate descent at most (two random ResNet-50s reach their fixed point in 19)."""


@dataclass(frozen=True)
class Options:
    """Method options. `wa_breakpoints`: points per weight-adjustment stage where the next layer is re-fitted
    (K ≥ 2), or "all" to re-fit at every evaluated t; `wa_samples`: training samples of those fits (None:
    all of them; else a subset drawn with `seed`); `bn_batches`: the fixed training batches BatchNorm's
    statistics are measured on at every point (None: points keep the statistics they carry), which the
    route's fits see as the evaluation does. `wm_sweeps`: weight matching's coordinate descent stops after this
    many sweeps (0: the aligned start alone; None: at its fixed point)."""

    wa_breakpoints: int | Literal["all"] = DEFAULT_BREAKPOINTS
    wa_samples: int | None = None
    bn_batches: int | None = None
    ot_solver: str = "emd"
    wm_sweeps: int | None = None
    seed: int = 0
    allow_seen: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        if self.wa_breakpoints != ALL and (not isinstance(self.wa_breakpoints, int) or self.wa_breakpoints < 2):
            raise LowlossError(
                f"--wa-breakpoints must be an integer of at least 2 or 'all' (got {self.wa_breakpoints!r})"
            )
        if self.wm_sweeps is not None and (not isinstance(self.wm_sweeps, int) or self.wm_sweeps < 0):
            raise LowlossError(f"--wm-sweeps must be an integer of at least 0 (got {self.wm_sweeps!r})")
        if self.ot_solver not in OT_SOLVERS:
            raise LowlossError(f"unknown OT solver {self.ot_solver!r} (known: {', '.join(OT_SOLVERS)})")


def breakpoints(text: str) -> int | Literal["all"]:
    """Parse `--wa-breakpoints`: an integer K ≥ 2 or 'all'."""
    if text == ALL:
        return ALL
    try:
        value = int(text)
    except ValueError:
        raise LowlossError(f"--wa-breakpoints must be an integer of at least 2 or 'all' (got {text!r})") from None
    return Options(wa_breakpoints=value).wa_breakpoints


@dataclass
class Context:
    """The endpoints' network (spec, layers, cuttable forward), the dataset (weight adjustment fits on its
    training split), options, the endpoints' artifacts (their hashes check fitted files against them), and
    the fitted files a method reads: a connector (learned ν), a curve (Garipov), a matching (OT)."""

    network: Network
    data: Dataset | None = None
    options: Options = field(default_factory=Options)
    endpoints: tuple[Artifact, Artifact] | None = None
    connector: Artifact | None = None
    curve: Artifact | None = None
    matching: Artifact | None = None

    @property
    def model(self):
        return self.network.model

    @property
    def spec(self):
        return self.network.spec

    @property
    def fitted_seconds(self) -> float:
        """The seconds recorded in the fitted files given (0 for a file that records none)."""
        files = (self.connector, self.curve, self.matching)
        return sum(file.meta.get("seconds") or 0.0 for file in files if file is not None)

    @property
    def device(self) -> torch.device:
        import torch

        return self.data.x_train.device if self.data is not None else torch.device("cpu")
