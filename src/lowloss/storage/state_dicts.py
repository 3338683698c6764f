"""A user's checkpoint read as a state dict, and checked against the network it is for.

A checkpoint is plain safetensors, or a PyTorch file (`.pt`, `.pth`, `.bin`, `.ckpt`) read with
`torch.load(weights_only=True, map_location="cpu")`: tensors and plain containers only, never code, so a
file that needs a class to be unpickled (a whole pickled model, a training script's objects) is refused. The
state dict may sit under a key of a training checkpoint (`{"state_dict": …}`, `{"model": …}`, …) and carry
the `module.` prefix of DataParallel (or `_orig_mod.` of torch.compile). Its keys, shapes and values must
then fit the network exactly; the first that does not is named. Nothing here writes a file.
"""

from __future__ import annotations

import os
import pickle
import re
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from lowloss.errors import LowlossError
from lowloss.storage.atomic import require_file
from lowloss.storage.file_kinds import PICKLE_SUFFIXES, WEIGHTS_SUFFIX
from lowloss.storage.header import FLOAT_DTYPES
from lowloss.storage.weights import check_finite

SAFETENSORS_SUFFIXES = (WEIGHTS_SUFFIX,)
NESTED_KEYS = ("state_dict", "model_state_dict", "model", "module", "net", "network")
"""Keys under which training scripts commonly keep the state dict, tried in this order."""
WRAPPER_PREFIXES = ("module.", "_orig_mod.")
"""Prefixes that wrappers add to every key: DataParallel and DistributedDataParallel, torch.compile."""
_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint, by key, on CPU (refusing files that need code to load)."""
    path = Path(path)
    require_file(path)
    if path.suffix in SAFETENSORS_SUFFIXES:
        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise LowlossError(f"{path}: not a readable safetensors file ({exc})") from None
    if path.suffix not in PICKLE_SUFFIXES:
        raise LowlossError(
            f"{path}: unknown checkpoint format {path.suffix or '(no suffix)'!r} "
            f"(expected {', '.join(SAFETENSORS_SUFFIXES + PICKLE_SUFFIXES)})"
        )
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch.load raises many types on a file that is not a checkpoint at all
        needs = _GLOBAL.search(str(exc)) if isinstance(exc, pickle.UnpicklingError) else None
        if needs:
            raise LowlossError(
                f"{path}: needs code to be unpickled ({needs.group(1)}), which lowloss never runs; "
                f"save `model.state_dict()` (torch.save or safetensors) instead"
            ) from None
        reason = " ".join(str(exc).split())[:200]
        raise LowlossError(f"{path}: not a readable PyTorch checkpoint ({type(exc).__name__}: {reason})") from None
    return _state_dict_in(path, content)


def _state_dict_in(path: Path, content, where: str = "") -> dict[str, torch.Tensor]:
    """The state dict in a loaded checkpoint: `content` itself when it maps names to tensors, else the one under
    the first of NESTED_KEYS it holds."""
    if not isinstance(content, dict):
        raise LowlossError(f"{path}: holds a {type(content).__name__}{where}, not a state dict")
    if content and all(isinstance(value, torch.Tensor) for value in content.values()):
        return dict(content)
    for key in NESTED_KEYS:
        if isinstance(content.get(key), dict):
            return _state_dict_in(path, content[key], f"{where}[{key!r}]")
    keys = ", ".join(map(str, list(content)[:8]))
    raise LowlossError(
        f"{path}: holds no state dict{where} (keys: {keys or 'none'}); expected tensors by name, or a "
        f"state dict under one of {', '.join(NESTED_KEYS)}"
    )


def fitted_state_dict(
    path: str | os.PathLike, state: dict[str, torch.Tensor], model: nn.Module, name: str
) -> dict[str, torch.Tensor]:
    """`state` checked against `model` (named `name` in messages) and converted to its dtypes, in its key order.

    A wrapper's prefix is dropped first. Refuses, naming the first key in the model's order, a missing
    tensor, one of another shape, one the model does not have, weights that are not float32 or float64 (half
    precision or integers would be rounded or changed in meaning by a silent conversion), and NaN or Inf values.
    """
    expected = model.state_dict()
    state = _unwrapped(state, expected)
    for key, tensor in expected.items():
        if key not in state:
            raise LowlossError(
                f"{path}: has no tensor {key!r}, which {name} needs ({len(state)} tensors in the file, "
                f"{len(expected)} in the model)"
            )
        if state[key].shape != tensor.shape:
            raise LowlossError(
                f"{path}: tensor {key!r} has shape {list(state[key].shape)}, {name} needs {list(tensor.shape)}"
            )
        found = str(state[key].dtype).removeprefix("torch.")
        if tensor.is_floating_point() and found not in FLOAT_DTYPES:
            raise LowlossError(
                f"{path}: tensor {key!r} is {found}; lowloss reads weights in {' or '.join(FLOAT_DTYPES)} only "
                f"(save the state dict after `model.float()`)"
            )
    extra = [key for key in state if key not in expected]
    if extra:
        raise LowlossError(f"{path}: tensor {extra[0]!r} is not in {name} ({len(extra)} such tensors in the file)")
    fitted = {key: state[key].to(tensor.dtype).contiguous() for key, tensor in expected.items()}
    check_finite(Path(path), fitted)
    return fitted


def _unwrapped(state: dict[str, torch.Tensor], expected: dict) -> dict[str, torch.Tensor]:
    """`state` without a wrapper's prefix that every key has and the model's keys have not."""
    for prefix in WRAPPER_PREFIXES:
        if state and all(key.startswith(prefix) for key in state) and not any(k.startswith(prefix) for k in expected):
            return {key.removeprefix(prefix): value for key, value in state.items()}
    return state
