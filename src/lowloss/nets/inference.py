"""The spec of any network: its own `spec()` for the built-in architectures, else inferred from its graph."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from lowloss.errors import LowlossError
from lowloss.nets.spec import Spec


def model_spec(model: nn.Module, input_shape: Sequence[int], freeze: Sequence[str] = ()) -> Spec:
    """The spec of `model` for inputs of `input_shape` (C, H, W without the batch): the model's own `spec()`
    when it has one, else the spec inferred from its torch.fx graph and checked by permuting every group at
    random. `freeze` names modules whose units stay in place. Raises one line naming what breaks."""
    if hasattr(model, "spec") and not freeze:
        return model.spec()
    raise LowlossError(f"{type(model).__name__}: spec inference is not available yet")
