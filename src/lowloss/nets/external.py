"""Networks built from a reference (`lowloss.nets.references`): a torchvision or timm model, or the user's own
class or factory, with random weights; and what running one on an example input tells (its outputs).

Nothing is downloaded: zoo models are built without pretrained weights (the user's checkpoint brings them).
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Sequence

import torch
from torch import nn

from lowloss.errors import LowlossError, did_you_mean
from lowloss.nets.references import TIMM, TORCHVISION, ZOOS, zoo_names

PROBE_BATCH = 2
"""Inputs the model is run on to read its outputs (two: BatchNorm in train mode would refuse one)."""


def build_reference(reference: str, args: dict | None = None) -> nn.Module:
    """The network `reference` names, built with `args`, random weights, in eval mode."""
    source, _, name = reference.partition(":")
    args = dict(args or {})
    builder = _zoo_builder(source, name) if source in ZOOS else _user_builder(source, name)
    try:
        model = builder(**args)
    except TypeError as exc:  # an argument the builder does not take, or one it needs
        raise LowlossError(f"{reference}: cannot build it with arguments {args} ({exc})") from None
    if not isinstance(model, nn.Module):
        raise LowlossError(f"{reference}: returned a {type(model).__name__}, not a torch nn.Module")
    return model.eval()


def _zoo_builder(zoo: str, name: str):
    known = zoo_names(zoo)
    if not known:
        extra = " (pip install timm, or lowloss[timm])" if zoo == TIMM else ""
        raise LowlossError(f"{zoo}:{name}: {zoo} is not installed{extra}")
    if name not in known:
        raise LowlossError(
            f"unknown {zoo} model {name!r}{did_you_mean(name, known)}; {zoo}'s list_models() lists the {len(known)}"
        )
    if zoo == TORCHVISION:
        import torchvision

        return lambda **args: torchvision.models.get_model(name, **args)
    import timm

    return lambda **args: timm.create_model(name, pretrained=False, **args)


def _user_builder(module_name: str, attribute: str):
    """The class or factory `attribute` of the user's module, imported from the current folder or PYTHONPATH."""
    if os.getcwd() not in sys.path and "" not in sys.path:  # the `lowloss` script does not put it there
        sys.path.append(os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        hint = did_you_mean(module_name, ZOOS) if exc.name == module_name.partition(".")[0] else ""
        raise LowlossError(
            f"{module_name}:{attribute}: cannot import {module_name!r} ({exc}){hint}; "
            f"run from the folder that holds it or add it to PYTHONPATH"
        ) from None
    found = module
    for part in attribute.split("."):
        if not hasattr(found, part):
            public = [name for name in vars(module) if not name.startswith("_")]
            raise LowlossError(
                f"{module_name}:{attribute}: module {module_name!r} has no {part!r}{did_you_mean(part, public)}"
            )
        found = getattr(found, part)
    if not callable(found):
        raise LowlossError(f"{module_name}:{attribute}: is a {type(found).__name__}, not a class or factory")
    return found


@torch.no_grad()
def output_size(model: nn.Module, input_shape: Sequence[int], name: str) -> int:
    """The number of outputs (classes) `model` gives for inputs of `input_shape`; refuses, in one line naming the
    model `name`, inputs it does not take or outputs that are not one vector per input."""
    device = next(model.parameters(), torch.empty(0)).device
    x = torch.zeros((PROBE_BATCH, *input_shape), device=device)
    try:
        out = model.eval()(x)
    except Exception as exc:  # whatever the model raises on this shape: it does not take such inputs
        message = " ".join(str(exc).split())
        shape = "×".join(map(str, input_shape))
        raise LowlossError(f"{name} does not take inputs of size {shape} ({type(exc).__name__}: {message})") from None
    if not isinstance(out, torch.Tensor) or out.dim() != 2 or len(out) != PROBE_BATCH:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise LowlossError(f"{name} returns {got} for a batch of {PROBE_BATCH}; lowloss needs logits (batch, classes)")
    return out.shape[1]


def timm_data_config(model: nn.Module) -> dict | None:
    """timm's pretrained config of a timm model (input size, mean, std), None for any other model."""
    if getattr(model, "pretrained_cfg", None) is None:
        return None
    from timm.data import resolve_data_config

    return resolve_data_config({}, model=model)
