"""Model references: parsed as text without torch, built on demand from torchvision, timm or the user's code,
and every mistake named in one line with the closest name."""

from __future__ import annotations

import pytest
import torch

from lowloss.errors import LowlossError
from lowloss.nets.external import build_reference, output_size
from lowloss.nets.models import build_model
from lowloss.nets.references import (
    is_reference,
    parse_input_size,
    parse_model_args,
    parse_reference,
    possible_topologies,
)
from lowloss.nets.topology import ONE_HIDDEN
from tests.user_models import TinyCNN


def test_model_args_are_json_or_python_literals_or_bare_words():
    args = parse_model_args("num_classes=10,channels=[8, 16],scale=0.5,norm=batch,affine=true,bias=False,x=null")
    assert args == {
        "num_classes": 10,
        "channels": [8, 16],
        "scale": 0.5,
        "norm": "batch",
        "affine": True,
        "bias": False,
        "x": None,
    }
    assert parse_model_args("") == {}


@pytest.mark.parametrize(
    "text,fragment",
    [
        ("num_classes=", "expected NAME=VALUE"),
        ("10", "every argument needs a name"),
        ("width=2*3", "model argument width=2 * 3: not a literal"),
    ],
)
def test_bad_model_args_are_named(text, fragment):
    with pytest.raises(LowlossError, match=fragment.replace("*", r"\*")):
        parse_model_args(text)


def test_input_size_is_three_positive_integers():
    assert parse_input_size("3,32,32") == (3, 32, 32)
    for text in ("3,32", "3,0,32", "a,b,c"):
        with pytest.raises(LowlossError, match="expected C,H,W"):
            parse_input_size(text)
    for text in ("3,32,4097", "1025,32,32"):
        with pytest.raises(LowlossError, match="at most 1024 channels and 4096 pixels a side"):
            parse_input_size(text)


def test_references_are_told_from_built_in_names():
    assert all(map(is_reference, ["torchvision:resnet18", "timm:resnet10t", "my.models:Net"]))
    assert not any(map(is_reference, ["onehidden", "resnet18", ":x", "a b:c"]))
    assert parse_reference("timm:vit_tiny_patch16_224.augreg_in21k") == "timm:vit_tiny_patch16_224.augreg_in21k"


def test_a_bare_zoo_name_suggests_the_reference():
    with pytest.raises(
        LowlossError, match=r"model 'resnet18' is not a reference \(did you mean `torchvision:resnet18`"
    ):
        parse_reference("resnet18")


def test_zoo_models_are_never_one_hidden_while_the_users_code_may_be():
    assert ONE_HIDDEN not in possible_topologies("torchvision:resnet18")
    assert ONE_HIDDEN not in possible_topologies("timm:resnet10t")
    assert ONE_HIDDEN in possible_topologies("my.models:Net")


def test_a_torchvision_model_is_built_with_its_arguments_and_counts_its_classes():
    model = build_model("torchvision:resnet18", (3, 32, 32), 10, {"num_classes": 10})
    assert type(model).__name__ == "ResNet" and not model.training
    assert output_size(model, (3, 32, 32), "torchvision:resnet18") == 10


def test_a_timm_model_is_built_without_downloading():
    model = build_reference("timm:resnet10t", {"num_classes": 7})
    assert output_size(model, (3, 32, 32), "timm:resnet10t") == 7


def test_the_users_class_or_factory_is_built_from_the_current_folder():
    assert isinstance(build_reference("tests.user_models:TinyCNN", {"channels": [2, 3]}), TinyCNN)
    model = build_reference("tests.user_models:tiny_cnn", {"width": 2})
    assert model.conv2.out_channels == 4


@pytest.mark.parametrize(
    "reference,args,fragment",
    [
        ("torchvision:resnet19", {}, "unknown torchvision model 'resnet19' (did you mean `resnet18`?)"),
        ("timm:resnet10", {}, "unknown timm model 'resnet10' (did you mean `resnet10t`?)"),
        ("torchvison:resnet18", {}, "cannot import 'torchvison'"),
        ("tests.user_models:TinyCNNN", {}, "has no 'TinyCNNN' (did you mean `TinyCNN`?)"),
        ("tests.user_models:TinyCNN", {"width": 3}, "cannot build it with arguments {'width': 3}"),
        ("torch:float32", {}, "is a dtype, not a class or factory"),
    ],
)
def test_an_unknown_model_or_argument_is_named_with_the_closest(reference, args, fragment):
    with pytest.raises(LowlossError) as error:
        build_reference(reference, args)
    assert fragment in str(error.value) and "\n" not in str(error.value)


def test_a_misspelt_zoo_is_suggested():
    with pytest.raises(LowlossError, match="did you mean `torchvision`"):
        build_reference("torchvison:resnet18")


def test_an_input_the_model_does_not_take_is_named():
    with pytest.raises(LowlossError, match=r"tests.user_models:TinyCNN does not take inputs of size 3×8×8"):
        output_size(TinyCNN(), (3, 8, 8), "tests.user_models:TinyCNN")


def test_a_model_must_give_one_vector_of_logits_per_input():
    with pytest.raises(LowlossError, match=r"returns \(2, 10, 8, 8\) for a batch of 2"):
        output_size(torch.nn.Conv2d(1, 10, 1), (1, 8, 8), "conv")
