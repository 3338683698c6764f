"""Match the units of two networks as a method does: the permutations, and B permuted onto A's units.

`match` is the Python API; `lowloss match` reads its files and options and calls `match_endpoints`, the same
code path, then saves the permutations.
"""

from __future__ import annotations

import copy
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from lowloss.api.data import DataInput, dataset_of, labels_only
from lowloss.api.models import Endpoints, ModelInput, endpoints_of, for_data, with_inputs
from lowloss.errors import LowlossError
from lowloss.methods.context import Context, Options
from lowloss.methods.registry import ROUTE_METHODS, Method, get_method
from lowloss.nets.network import Network
from lowloss.nets.params import Params
from lowloss.nets.spec import Spec, permute
from lowloss.training.data import Dataset
from lowloss.training.user_data import UserSplit


@dataclass(frozen=True)
class Matching:
    """A method's matching of B's units onto A's: `perms[group][i]` is the unit of B that takes A's unit i's
    place; `fitted` is what it depends on besides the endpoints (a route's data), None for the endpoints alone;
    `seconds`: what finding it took."""

    method: Method
    perms: dict[str, Tensor]
    fitted: dict | None
    network: Network
    theta_b: Params
    seconds: float

    @property
    def spec(self) -> Spec:
        return self.network.spec

    @property
    def units_moved(self) -> dict[str, int]:
        """Per group, how many of B's units the matching moves."""
        return {group: int((perm.cpu() != torch.arange(len(perm))).sum()) for group, perm in self.perms.items()}

    def aligned(self) -> nn.Module:
        """B with its units permuted onto A's: the same function as B, as an ordinary nn.Module on CPU."""
        model = copy.deepcopy(self.network.model)
        model.load_state_dict(permute(self.theta_b, self.spec, self.perms))
        return model.cpu().eval()


def match_endpoints(endpoints: Endpoints, data: Dataset | None, method: Method, options: Options) -> Matching:
    """The matching `method` uses between the endpoints (route methods fit theirs on `data`)."""
    if options.bn_batches is not None and method.base_name not in ROUTE_METHODS:
        raise LowlossError(f"--bn-batches applies to the route methods' matchings, not to {method.name!r}")
    device = data.x_train.device if data is not None else torch.device("cpu")
    ctx = Context(endpoints.network(device), data, options, endpoints.artifacts)
    method.check(ctx.network, endpoints.arch, ctx)
    theta_a, theta_b = endpoints.params(device)
    started = time.perf_counter()
    perms, fitted = method.match(theta_a, theta_b, ctx)
    return Matching(method, perms, fitted, ctx.network, theta_b, time.perf_counter() - started)


def match(
    model_a: ModelInput,
    model_b: ModelInput,
    method: str = "weight-matching",
    *,
    train: DataInput | None = None,
    test: UserSplit | None = None,
    input_size: Sequence[int] | None = None,
    freeze: Sequence[str] = (),
    bn_batches: int | None = None,
    wa_samples: int | None = None,
    ot_solver: str = "emd",
    wm_sweeps: int | None = None,
    seed: int = 0,
    device: str | torch.device = "auto",
    data_root: str | os.PathLike = "data",
    progress: bool = True,
) -> Matching:
    """Match B's units onto A's as `method` does: `weight-matching` (Git Re-Basin), `ot` (optimal transport,
    §3.4), or a route method's (`ot+wa`, `ot+bfly`, fitted on `train`).

    `wm_sweeps`: `weight-matching`'s coordinate descent stops after that many sweeps (0: the aligned start
    alone; None: at its fixed point). `weight-matching` and `ot` need no data: without `train`, two nn.Modules
    need `input_size`, the shape (C, H, W) of one input, for their spec. Returns the `Matching`: `perms`, and
    `aligned()`, B permuted onto A.
    """
    chosen = get_method(method)
    endpoints = endpoints_of(model_a, model_b, freeze)
    data = None
    if train is not None:
        data = dataset_of(train, test, device=device, data_root=data_root, progress=progress)
        endpoints, data = for_data(endpoints, data, labels_only(train))
    elif "input_shape" not in endpoints.meta:
        if input_size is None:
            raise LowlossError(f"{method}: pass train= (the data) or input_size= (C, H, W) for the models' spec")
        endpoints = with_inputs(endpoints, tuple(input_size), None)
    options = Options(
        wa_samples=wa_samples,
        bn_batches=bn_batches,
        ot_solver=ot_solver,
        wm_sweeps=wm_sweeps,
        seed=seed,
        progress=progress,
    )
    return match_endpoints(endpoints, data, chosen, options)
