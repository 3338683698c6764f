"""Endpoint training (paper §5): SGD with momentum, Garipov et al.'s learning-rate schedule, resumable.

Determinism: every epoch draws its shuffle, augmentation and dropout from generators seeded by
(seed, epoch), so a run resumed from its end-of-epoch checkpoint ends with bit-identical weights.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from lowloss.errors import LowlossError
from lowloss.nets.models import arch_options, build_model
from lowloss.storage.checkpoints import (
    checkpoint_path,
    config_hash,
    discard_checkpoint,
    epoch_generator,
    resumable_checkpoint,
)
from lowloss.storage.file_kinds import CHECKPOINT, MODEL
from lowloss.storage.weights import Artifact, save_weights
from lowloss.training.config import TrainConfig
from lowloss.training.data import Dataset, augment_batch

EVAL_BATCH = 2048
MOMENTUM_PREFIX = "momentum::"

Objective = Callable[[torch.Tensor, torch.Tensor, torch.Generator], tuple[torch.Tensor, torch.Tensor]]
"""(x, y, generator) -> (loss to minimise, logits) for one minibatch."""


SCHEDULE = "garipov-per-step"
"""The learning-rate schedule (`learning_rate`), named in every trained file's sidecar and so in its identity: a
checkpoint written under another schedule is set aside rather than resumed under this one."""


def learning_rate(fraction: float, config: TrainConfig) -> float:
    """Garipov et al.'s schedule at `fraction`, the fraction of the run's steps done: constant for the first half,
    then linearly down to 1 % of lr by 90 %. Evaluated at every step rather than at each epoch's start (as their
    code does), so that a run of a few epochs anneals too: a one- or two-epoch fit would otherwise run at the full
    rate throughout; over tens of epochs the two agree."""
    if fraction <= 0.5:
        factor = 1.0
    elif fraction <= 0.9:
        factor = 1.0 - (fraction - 0.5) / 0.4 * 0.99
    else:
        factor = 0.01
    return config.lr * factor


@torch.no_grad()
def evaluate_model(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """Mean cross-entropy and accuracy (a fraction) of `model` on (x, y), in eval mode."""
    was_training = model.training
    model.eval()
    loss_sum, correct = 0.0, 0
    for start in range(0, len(x), EVAL_BATCH):
        logits = model(x[start : start + EVAL_BATCH])
        target = y[start : start + EVAL_BATCH]
        loss_sum += F.cross_entropy(logits, target, reduction="sum").item()
        correct += (logits.argmax(1) == target).sum().item()
    model.train(was_training)
    return loss_sum / len(x), correct / len(x)


def cross_entropy_of(model: nn.Module) -> Objective:
    """The endpoint objective: cross-entropy of `model(x)` (weight decay is the optimizer's)."""

    def objective(x: torch.Tensor, y: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        logits = model(x)
        return F.cross_entropy(logits, y), logits

    return objective


def train(
    model: nn.Module,
    data: Dataset,
    config: TrainConfig,
    checkpoint: Path | None = None,
    identity: str = "",
    on_epoch_end: Callable[[int, dict], None] | None = None,
    progress: bool = True,
    objective: Objective | None = None,
    desc: str = "training",
) -> list[dict]:
    """Train `model` in place on `data` (both on the same device); return per-epoch history.

    With `checkpoint`, the model and optimizer state are saved after every epoch and a matching
    checkpoint (same `identity`) is resumed from. `on_epoch_end(epoch, row)` runs before the save, so a
    resumed run's history holds what it added to the rows (an interrupt it raises loses that epoch).
    `objective` (default: cross-entropy of `model(x)`) lets another trainable module reuse this loop:
    curve training draws t per batch from the generator it is given, seeded by (seed, epoch) like the
    shuffle, so a resumed run stays bit-identical.
    """
    objective = objective or cross_entropy_of(model)
    device = data.x_train.device
    optimizer = torch.optim.SGD(
        model.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
    )
    history: list[dict] = []
    start = 0
    resumed = resumable_checkpoint(checkpoint, identity) if checkpoint is not None else None
    if resumed is not None:
        start, history = _resume(resumed, model, optimizer, device)
    n = len(data.x_train)
    bar = tqdm(
        range(start, config.epochs), desc=desc, unit="epoch", initial=start, total=config.epochs, disable=not progress
    )
    for epoch in bar:
        torch.manual_seed(config.seed * 1_000_003 + epoch)  # dropout masks
        order = torch.randperm(n, generator=epoch_generator(config.seed, epoch)).to(device)
        augment_gen = epoch_generator(config.seed, epoch, salt=1)
        objective_gen = epoch_generator(config.seed, epoch, salt=2)
        model.train()
        loss_sum, correct = 0.0, 0
        for begin in range(0, n, config.batch_size):
            lr = learning_rate((epoch + begin / n) / config.epochs, config)
            for group in optimizer.param_groups:
                group["lr"] = lr
            index = order[begin : begin + config.batch_size]
            x, y = data.x_train[index], data.y_train[index]
            if data.augment:
                x = augment_batch(x, augment_gen)
            loss, logits = objective(x, y, objective_gen)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.item() * len(y)
            correct += (logits.argmax(1) == y).sum().item()
        row = {"epoch": epoch + 1, "lr": lr, "train_loss": loss_sum / n, "train_acc": correct / n}
        if not torch.isfinite(torch.tensor(row["train_loss"])):
            raise LowlossError(f"training diverged at epoch {epoch + 1} (loss {row['train_loss']}); lower --lr")
        history.append(row)
        bar.set_postfix(loss=f"{row['train_loss']:.4f}", acc=f"{row['train_acc']:.4f}")
        if on_epoch_end is not None:  # before the save: what it adds to the row is checkpointed too
            on_epoch_end(epoch + 1, row)
        if checkpoint is not None:
            _save_checkpoint(checkpoint, identity, epoch + 1, model, optimizer, history)
    return history


def _save_checkpoint(
    path: Path, identity: str, epoch: int, model: nn.Module, optimizer: torch.optim.Optimizer, history: list[dict]
) -> None:
    tensors = dict(model.state_dict())
    for name, param in model.named_parameters():
        buffer = optimizer.state.get(param, {}).get("momentum_buffer")
        if buffer is not None:
            tensors[MOMENTUM_PREFIX + name] = buffer
    save_weights(path, tensors, {"kind": CHECKPOINT, "identity": identity, "epoch": epoch, "history": history})


def _resume(
    artifact: Artifact, model: nn.Module, optimizer: torch.optim.Optimizer, device: torch.device
) -> tuple[int, list[dict]]:
    state = {k: v for k, v in artifact.tensors.items() if not k.startswith(MOMENTUM_PREFIX)}
    model.load_state_dict(state)
    for name, param in model.named_parameters():
        buffer = artifact.tensors.get(MOMENTUM_PREFIX + name)
        if buffer is not None:
            optimizer.state[param]["momentum_buffer"] = buffer.to(device).clone()
    return artifact.meta["epoch"], list(artifact.meta["history"])


def train_endpoint(
    arch: str,
    options: dict,
    data: Dataset,
    config: TrainConfig,
    out: Path,
    on_epoch_end: Callable[[int, dict, nn.Module], None] | None = None,
    progress: bool = True,
) -> dict:
    """Train one endpoint from seed `config.seed`, save it as `out` (+ sidecar), return the sidecar.

    `on_epoch_end(epoch, row, model)` may add entries to the epoch's `row` of the history.
    """
    options = arch_options(arch, options)
    torch.manual_seed(config.seed)
    model = build_model(arch, data.input_shape, data.num_classes, options).to(data.x_train.device)
    produced_by = {
        "arch": arch,
        "arch_options": options,
        "dataset": data.name,
        "train": asdict(config),
        "schedule": SCHEDULE,
    }
    identity = config_hash(produced_by)
    epoch_end = None if on_epoch_end is None else lambda epoch, row: on_epoch_end(epoch, row, model)
    history = train(model, data, config, checkpoint_path(out), identity, epoch_end, progress)
    train_loss, train_acc = evaluate_model(model, data.x_train, data.y_train)
    test_loss, test_acc = evaluate_model(model, data.x_test, data.y_test)
    meta = {
        "kind": MODEL,
        **produced_by,
        "input_shape": list(data.input_shape),
        "num_classes": data.num_classes,
        "seed": config.seed,
        "epochs": config.epochs,
        "config_hash": identity,
        "history": history,
        "train_loss": train_loss,
        "train_acc": train_acc,
        "test_loss": test_loss,
        "test_acc": test_acc,
    }
    save_weights(out, model.state_dict(), meta)
    discard_checkpoint(out)
    return meta
