"""The optimiser loop that fits ν: Adam, gradient clipping, checkpoints that resume bit-identical."""

from __future__ import annotations

import logging
from pathlib import Path as FilePath

import torch
from torch import nn
from tqdm.auto import tqdm

from lowloss.errors import LowlossError
from lowloss.methods.flows.config import FitConfig
from lowloss.methods.flows.nu import Bijection
from lowloss.methods.flows.objectives import Objective
from lowloss.storage.checkpoints import epoch_generator, resumable_checkpoint
from lowloss.storage.file_kinds import CHECKPOINT
from lowloss.storage.weights import Artifact, save_weights

logger = logging.getLogger(__name__)

OPTIMIZER_PREFIX = "optimizer::"


def optimise(
    nu: Bijection,
    objective: Objective,
    config: FitConfig,
    checkpoint: FilePath | None = None,
    identity: str = "",
    progress: bool = True,
    desc: str = "fitting ν",
) -> list[dict]:
    """Adam on ν's weights for `config.steps` steps; returns the training curve, one row per step.

    Step s draws everything from `epoch_generator(seed, s)`, and the checkpoint (every
    `checkpoint_every` steps) holds ν, Adam's state and the curve, so an interrupted fit resumed from
    it ends bit-identical to an uninterrupted one.
    """
    optimizer = torch.optim.Adam(nu.parameters(), lr=config.lr)
    start, curve = 0, []
    resumed = resumable_checkpoint(checkpoint, identity) if checkpoint is not None else None
    if resumed is not None:
        start, curve = _resume(resumed, nu, optimizer)
    bar = tqdm(
        range(start, config.steps), desc=desc, unit="step", initial=start, total=config.steps, disable=not progress
    )
    for step in bar:
        loss, record = objective(epoch_generator(config.seed, step))
        if not torch.isfinite(loss):
            raise LowlossError(f"fitting ν diverged at step {step + 1} (loss {loss.item()}); lower --lr")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = nn.utils.clip_grad_norm_(nu.parameters(), config.max_grad_norm)
        finite = bool(torch.isfinite(grad_norm))
        if finite:  # ν⁻¹ can overflow on a rare pair: skip that step, keep Adam's moments finite
            optimizer.step()
        else:
            logger.warning("step %d: non-finite gradient, step skipped", step + 1)
        # a skipped step's norm is recorded as null: weight files hold finite numbers only
        curve.append(
            {"step": step + 1, "loss": loss.item(), "grad_norm": grad_norm.item() if finite else None, **record}
        )
        bar.set_postfix(loss=f"{loss.item():.4f}")
        logger.debug("step %d loss %.6f %s", step + 1, loss.item(), record)
        if checkpoint is not None and ((step + 1) % config.checkpoint_every == 0 or step + 1 == config.steps):
            _save_checkpoint(checkpoint, identity, step + 1, nu, optimizer, curve)
    return curve


def _save_checkpoint(
    path: FilePath, identity: str, step: int, nu: Bijection, optimizer: torch.optim.Optimizer, curve: list[dict]
) -> None:
    """Like `lowloss.training.train`'s checkpoint, but with every tensor of the optimizer state (Adam's moments)."""
    tensors = dict(nu.state_dict())
    for index, state in optimizer.state_dict()["state"].items():
        tensors.update({f"{OPTIMIZER_PREFIX}{index}::{key}": value for key, value in state.items()})
    save_weights(path, tensors, {"kind": CHECKPOINT, "identity": identity, "step": step, "curve": curve})


def _resume(artifact: Artifact, nu: Bijection, optimizer: torch.optim.Optimizer) -> tuple[int, list[dict]]:
    nu.load_state_dict({k: v for k, v in artifact.tensors.items() if not k.startswith(OPTIMIZER_PREFIX)})
    state: dict[int, dict] = {}
    for name, value in artifact.tensors.items():
        if name.startswith(OPTIMIZER_PREFIX):
            index, key = name.removeprefix(OPTIMIZER_PREFIX).split("::")
            state.setdefault(int(index), {})[key] = value
    optimizer.load_state_dict({"state": state, "param_groups": optimizer.state_dict()["param_groups"]})
    return artifact.meta["step"], list(artifact.meta["curve"])
