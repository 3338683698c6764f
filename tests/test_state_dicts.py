"""A user's checkpoint: read in every common format and nesting, never unpickling code, and checked key by key
against the network it is for."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from lowloss.errors import LowlossError
from lowloss.storage.state_dicts import fitted_state_dict, read_state_dict
from tests.user_models import TinyCNN


@pytest.fixture
def model():
    torch.manual_seed(0)
    return TinyCNN()


def saved(tmp_path, name: str, content) -> object:
    path = tmp_path / name
    if name.endswith(".safetensors"):
        save_file(content, str(path))
    else:
        torch.save(content, path)
    return path


@pytest.mark.parametrize(
    "name,wrap",
    [
        ("plain.pt", lambda state: state),
        ("plain.safetensors", lambda state: state),
        ("lightning.ckpt", lambda state: {"epoch": 3, "state_dict": state, "optimizer_states": [{"lr": 0.1}]}),
        ("trainer.pth", lambda state: {"model": {f"module.{k}": v for k, v in state.items()}, "step": 10}),
        ("compiled.bin", lambda state: {f"_orig_mod.{k}": v for k, v in state.items()}),
    ],
)
def test_every_common_form_gives_the_models_tensors(tmp_path, model, name, wrap):
    state = model.state_dict()
    path = saved(tmp_path, name, wrap(state))
    fitted = fitted_state_dict(path, read_state_dict(path), TinyCNN(), "TinyCNN")
    assert list(fitted) == list(state) and all(torch.equal(fitted[key], state[key]) for key in state)


def test_weights_of_another_precision_than_float32_or_float64_are_refused(tmp_path, model):
    """Half precision, bfloat16 and integers are named, never converted in silence; float64 weights take the
    model's dtype, and BatchNorm's batch count stays an integer."""
    for dtype in (torch.float16, torch.bfloat16, torch.int32):
        state = {
            key: value.to(dtype) if value.is_floating_point() else value for key, value in model.state_dict().items()
        }
        path = saved(tmp_path, f"{dtype}.pt", state)
        with pytest.raises(
            LowlossError, match=f"^{path}: tensor 'conv1.weight' is {str(dtype).removeprefix('torch.')};"
        ):
            fitted_state_dict(path, read_state_dict(path), model, "TinyCNN")
    path = saved(
        tmp_path,
        "double.pt",
        {key: value.double() if value.is_floating_point() else value for key, value in model.state_dict().items()},
    )
    fitted = fitted_state_dict(path, read_state_dict(path), model, "TinyCNN")
    assert fitted["conv1.weight"].dtype == torch.float32 and fitted["bn1.num_batches_tracked"].dtype == torch.int64


def test_a_file_that_needs_code_is_refused_unread(tmp_path, model):
    path = tmp_path / "whole.pt"
    torch.save(model, path)  # the pickled module: loading it would run TinyCNN's module
    with pytest.raises(LowlossError) as error:
        read_state_dict(path)
    message = str(error.value)
    assert message.startswith(f"{path}: needs code to be unpickled (tests.user_models.TinyCNN)")
    assert "state_dict()" in message and "\n" not in message


@pytest.mark.parametrize(
    "change,fragment",
    [
        (lambda s: {k: v for k, v in s.items() if k != "bn2.running_var"}, "has no tensor 'bn2.running_var'"),
        (lambda s: {**s, "head.weight": torch.zeros(1)}, "tensor 'head.weight' is not in TinyCNN"),
        (
            lambda s: {**s, "fc.weight": torch.zeros(3, 8)},
            "tensor 'fc.weight' has shape [3, 8], TinyCNN needs [10, 32]",
        ),
        (lambda s: {**s, "conv1.bias": torch.full((4,), float("nan"))}, "tensor 'conv1.bias' contains NaN or Inf"),
    ],
)
def test_the_first_key_that_does_not_fit_is_named(tmp_path, model, change, fragment):
    path = saved(tmp_path, "user.pt", change(dict(model.state_dict())))
    with pytest.raises(LowlossError, match=fragment.replace("[", r"\[").replace("]", r"\]")):
        fitted_state_dict(path, read_state_dict(path), TinyCNN(), "TinyCNN")


@pytest.mark.parametrize(
    "name,content,fragment",
    [
        ("notes.txt", None, "unknown checkpoint format '.txt'"),
        ("junk.pt", b"not a checkpoint", "not a readable PyTorch checkpoint"),
        ("junk.safetensors", b"\x00\x01", "not a readable safetensors file"),
        ("epoch.pt", {"epoch": 3, "lr": 0.1}, "holds no state dict (keys: epoch, lr)"),
        ("list.pt", [torch.zeros(1)], "holds a list, not a state dict"),
    ],
)
def test_a_file_without_a_state_dict_is_named(tmp_path, name, content, fragment):
    path = tmp_path / name
    if isinstance(content, bytes) or content is None:
        path.write_bytes(content or b"")
    else:
        torch.save(content, path)
    with pytest.raises(LowlossError) as error:
        read_state_dict(path)
    assert fragment in str(error.value)
