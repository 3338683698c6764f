"""Model references: a network that is not a built-in architecture, named as text, parsed without torch.

A reference is `torchvision:NAME` (torchvision.models.get_model), `timm:NAME` (timm.create_model, the
optional extra `timm`) or `package.module:ClassOrFactory` (the user's own code, importable from the
current folder or PYTHONPATH), with model arguments (`num_classes=10,width=32`). A model file records its
reference in `arch` and the arguments in `arch_options`, so every command rebuilds it
(`lowloss.nets.models.build_model`, which imports what a reference names only when it builds one).
Parsing here checks the text only (a zoo is imported to suggest a name only for text that is no reference);
an unknown name is found, with a did-you-mean, when the model is built.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field

from lowloss.errors import LowlossError, did_you_mean, shortened
from lowloss.nets.topology import ANY, LAYERED, ONE_HIDDEN, STAGED

TORCHVISION, TIMM = "torchvision", "timm"
ZOOS = (TORCHVISION, TIMM)
"""The model libraries a reference may name by `LIBRARY:NAME`; anything else before the colon is a module."""
ZOO_TOPOLOGIES = (ANY, STAGED, LAYERED)
"""What a zoo model may be: deep networks of every kind, never one hidden layer (no zoo holds such an MLP)."""
FORMS = "torchvision:NAME, timm:NAME or package.module:ClassOrFactory"
MAX_INPUT_CHANNELS = 1024
"""Channels of an input image: far beyond RGB, multispectral and hyperspectral bands (a few hundred)."""
MAX_INPUT_SIDE = 4096
"""Height or width of an input image: one 3×4096×4096 image is 200 MB in float32, eight times a 1024-pixel side;
the datasets here are 8 to 224 pixels wide."""
_DOTTED = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")
_JSON_WORDS = {"true": True, "false": False, "null": None}


@dataclass(frozen=True)
class ModelRef:
    """A model by reference: the text as given, its arguments and the modules whose units stay in place."""

    text: str
    args: dict = field(default_factory=dict)
    freeze: tuple[str, ...] = ()

    @property
    def source(self) -> str:
        """`torchvision`, `timm`, or the module that holds the class or factory."""
        return self.text.partition(":")[0]

    @property
    def name(self) -> str:
        """The zoo's model name, or the class or factory in its module."""
        return self.text.partition(":")[2]

    @property
    def zoo(self) -> bool:
        return self.source in ZOOS


def is_reference(text: str) -> bool:
    """Whether `text` has the form of a reference (`SOURCE:NAME`), as opposed to a built-in architecture name."""
    source, colon, name = text.partition(":")
    return bool(colon) and bool(_DOTTED.fullmatch(source)) and bool(name)


def parse_reference(text: str) -> str:
    """`text` checked to be a reference; a bare name is refused with the form to use (and the closest zoo name
    when the zoos are installed)."""
    if is_reference(text) and (text.partition(":")[0] in ZOOS or _DOTTED.fullmatch(text.partition(":")[2])):
        return text
    hint = _zoo_suggestion(text.rpartition(":")[2]) if text else ""
    raise LowlossError(f"model {text!r} is not a reference{hint}; write {FORMS}")


def _zoo_suggestion(name: str) -> str:
    """` (did you mean `torchvision:resnet18`?)` when a zoo that is installed knows a name close to `name`."""
    known = [f"{zoo}:{model}" for zoo in ZOOS for model in zoo_names(zoo)]
    exact = [ref for ref in known if ref.partition(":")[2] == name]
    return f" (did you mean `{exact[0]}`?)" if exact else did_you_mean(name, known)


def zoo_names(zoo: str) -> list[str]:
    """The model names `zoo` can build ([] when the library is not installed); imports the library."""
    try:
        if zoo == TORCHVISION:
            import torchvision

            return list(torchvision.models.list_models())
        import timm

        return list(timm.list_models())
    except ImportError:
        return []


def parse_model_args(text: str) -> dict:
    """`num_classes=10,width=32,channels=[8,16],norm=batch` as a dict: each value a JSON or Python literal,
    or a bare word taken as a string."""
    if not text.strip():
        return {}
    try:
        call = ast.parse(f"f({text})", mode="eval").body
    except SyntaxError:
        raise LowlossError(f"model arguments {text!r}: expected NAME=VALUE,NAME=VALUE…") from None
    if call.args or any(keyword.arg is None for keyword in call.keywords):
        raise LowlossError(f"model arguments {text!r}: every argument needs a name (NAME=VALUE)")
    return {keyword.arg: _literal(keyword.arg, keyword.value) for keyword in call.keywords}


def _literal(name: str, node: ast.expr):
    if isinstance(node, ast.Name):
        return _JSON_WORDS.get(node.id, node.id)
    try:
        return ast.literal_eval(node)
    except ValueError:
        raise LowlossError(
            f"model argument {name}={ast.unparse(node)}: not a literal (a number, string, list, true/false, null)"
        ) from None


def parse_input_size(text: str) -> tuple[int, int, int]:
    """`3,32,32` as (channels, height, width): channels in [1, MAX_INPUT_CHANNELS], sides in [1, MAX_INPUT_SIDE]."""
    shown = shortened(text, 40)
    try:
        size = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise LowlossError(f"input size {shown!r}: expected C,H,W (three integers)") from None
    if len(size) != 3 or min(size) < 1:
        raise LowlossError(f"input size {shown!r}: expected C,H,W (three integers of at least 1)")
    if size[0] > MAX_INPUT_CHANNELS or max(size[1:]) > MAX_INPUT_SIDE:
        raise LowlossError(
            f"input size {shown!r}: at most {MAX_INPUT_CHANNELS} channels and {MAX_INPUT_SIDE} pixels a side"
        )
    return size


def possible_topologies(reference: str) -> tuple[str, ...]:
    """The topologies a reference's network may have, known without building it: a zoo model is no one-hidden
    network; the user's own code may be anything."""
    source = reference.partition(":")[0]
    return ZOO_TOPOLOGIES if source in ZOOS else (ANY, STAGED, LAYERED, ONE_HIDDEN)
