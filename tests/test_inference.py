"""Spec inference from the graph: it reproduces every hand-written spec, it sees skips, gates, concatenations,
depthwise convs and norms in other people's models (checked by permuting every group), and whatever it cannot
see is refused by name or frozen on request."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lowloss.errors import LowlossError
from lowloss.methods.weight_matching import match_weights
from lowloss.nets.inference import check_spec, example_input, infer_spec, model_spec
from lowloss.nets.models import build_model
from lowloss.nets.network import Network
from lowloss.nets.spec import Spec, axis_groups, dense, permute
from lowloss.nets.topology import ANY, STAGED
from tests.conftest import SMALL

torchvision = pytest.importorskip("torchvision")

BUILT_IN = [
    *SMALL.items(),
    *(("resnet20", {"width_multiplier": 0.25, "norm": norm}) for norm in ("batch", "layer", "none")),
]
IMAGE = (3, 32, 32)


def canonical(spec: Spec, keys: list[str]) -> dict[str, tuple]:
    """The spec with its groups renamed by order of first appearance over `keys`: two specs that tie the same
    axes together compare equal whatever they call their groups."""
    names: dict[str, int] = {}
    return {
        key: tuple(tuple(names.setdefault(g, len(names)) for g in axis_groups(entry)) or None
                   for entry in spec.axes[key])
        for key in keys
    }  # fmt: skip


@pytest.mark.parametrize("arch,options", BUILT_IN, ids=[f"{a}-{o.get('norm', '')}".rstrip("-") for a, o in BUILT_IN])
def test_the_inferred_spec_of_every_built_in_architecture_is_its_hand_written_spec(arch, options):
    model = build_model(arch, (1, 8, 8), 10, options)
    keys = list(model.state_dict())
    inferred = infer_spec(model, example_input((1, 8, 8)))
    assert canonical(inferred, keys) == canonical(model.spec(), keys)
    assert set(inferred.axes) == set(keys)


class SkipGateCat(nn.Module):
    """A user's own module: a residual skip, a squeeze-and-excitation gate and a concatenation of two branches."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.body = nn.Conv2d(8, 8, 3, padding=1)
        self.squeeze, self.excite = nn.Conv2d(8, 4, 1), nn.Conv2d(4, 8, 1)
        self.branch = nn.Conv2d(8, 6, 1)
        self.mix = nn.Conv2d(14, 12, 1)
        self.head = nn.Linear(12 * 4, 10)

    def forward(self, x):
        x = F.relu(self.bn(self.stem(x)))
        x = x + F.relu(self.body(x))  # skip: stem and body tie
        gate = torch.sigmoid(self.excite(F.relu(self.squeeze(x.mean((2, 3), keepdim=True)))))
        x = x * gate  # gate: excite ties to the stream
        x = torch.cat([x, F.relu(self.branch(x))], 1)  # mix reads the stream and the branch side by side
        x = F.adaptive_avg_pool2d(F.relu(self.mix(x)), 2)
        return self.head(x.flatten(1))


def test_a_users_module_with_a_skip_a_gate_and_a_cat():
    spec = infer_spec(SkipGateCat(), example_input(IMAGE))
    assert spec.axes["stem.weight"][0] == spec.axes["body.weight"][0] == spec.axes["excite.weight"][0] == "stem"
    assert spec.axes["mix.weight"][:2] == ("mix", ("stem", "branch"))
    assert spec.axes["head.weight"] == (None, "mix")  # the flattened 12 x 2 x 2: 4 entries per unit
    assert spec.axes["bn.running_var"] == ("stem",) and spec.axes["bn.num_batches_tracked"] == ()
    assert spec.groups == ["stem", "squeeze", "branch", "mix"]


ZOO = {
    "resnet18": lambda: torchvision.models.resnet18(num_classes=10),
    "vgg11_bn": lambda: _narrow_vgg(torchvision.models.vgg11_bn(num_classes=10)),
    "mobilenet_v3_small": lambda: torchvision.models.mobilenet_v3_small(num_classes=10),
    "densenet121": lambda: torchvision.models.densenet121(num_classes=10),
    "timm-efficientnet_b0": lambda: pytest.importorskip("timm").create_model("efficientnet_b0", num_classes=10),
    "skip-gate-cat": SkipGateCat,
}


def _narrow_vgg(model: nn.Module) -> nn.Module:
    """vgg11_bn with 64-unit classifier layers instead of 4096 (its features untouched): weight matching of two
    4096-unit groups reading 25088 features would take minutes on a 2-core CPU."""
    model.classifier[0], model.classifier[3] = nn.Linear(512 * 7 * 7, 64), nn.Linear(64, 64)
    model.classifier[6] = nn.Linear(64, 10)
    return model


@pytest.mark.slow
@pytest.mark.parametrize("name", list(ZOO))
def test_weight_matching_recovers_a_planted_permutation_on_an_inferred_spec(name):
    """The self-test passes (infer_spec runs it), the planted network computes the same function, and weight
    matching finds exactly the permutation that undoes it."""
    torch.manual_seed(0)
    model = ZOO[name]().eval()
    spec = infer_spec(model, example_input(IMAGE))
    theta_a = {key: value.detach() for key, value in model.state_dict().items()}
    generator = torch.Generator().manual_seed(1)
    planted = {group: torch.randperm(spec.size(theta_a, group), generator=generator) for group in spec.groups}
    theta_b = permute(theta_a, spec, planted)
    x = example_input(IMAGE, seed=3)
    with torch.no_grad():
        outputs = [torch.func.functional_call(model, theta, (x,)) for theta in (theta_a, theta_b)]
    torch.testing.assert_close(outputs[1], outputs[0], rtol=1e-4, atol=1e-4)
    found = match_weights(theta_a, theta_b, spec.trained())
    undone = permute(theta_b, spec, found)
    assert all(torch.equal(undone[key], theta_a[key]) for key in theta_a)


def test_residual_stages_of_an_inferred_resnet_and_no_stages_through_a_concatenation():
    resnet = torchvision.models.resnet18(num_classes=10)
    network = Network(resnet, infer_spec(resnet, example_input(IMAGE)))
    assert network.topology == STAGED
    assert [len(stage.groups) for stage in network.stages] == [3, 3, 3, 3]  # each stage: its stream, two blocks
    densenet = torchvision.models.densenet121(num_classes=10)
    network = Network(densenet, infer_spec(densenet, example_input(IMAGE), check=False))
    assert network.topology == ANY
    with pytest.raises(LowlossError, match="reads several groups side by side"):
        _ = network.stages


class Attention(nn.Module):
    """A hand-written attention block: its heads mix positions through a product of two computed tensors."""

    def __init__(self, dim: int = 8):
        super().__init__()
        self.qkv, self.out = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)

    def forward(self, x):
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        weights = torch.softmax(q @ k.transpose(-2, -1), dim=-1)
        return self.out(weights @ v)


class Tokens(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Linear(4, 8)
        self.attn = Attention()
        self.mlp = nn.Linear(8, 16)
        self.head = nn.Linear(16, 10)

    def forward(self, x):
        h = self.embed(x)
        h = h + self.attn(h)
        return self.head(F.relu(self.mlp(h)).mean(1))


def test_an_operation_the_inference_cannot_see_is_refused_by_name_or_frozen_on_request():
    with pytest.raises(LowlossError, match=r"Tokens: \.chunk\(\) of attn\.qkv in attn: .* pass --freeze attn "):
        infer_spec(Tokens(), example_input((5, 4)))
    spec = infer_spec(Tokens(), example_input((5, 4)), freeze=["attn"])  # checked: the outputs stay the same
    assert spec.axes["attn.qkv.weight"] == (None, None) and spec.axes["embed.weight"] == (None, None)
    assert spec.axes["mlp.weight"] == ("mlp", None) and spec.groups == ["mlp"]


def test_a_spec_that_breaks_the_symmetry_is_refused_at_the_operation_that_changes():
    model = build_model("onehidden", (1, 8, 8), 10, {"width": 16})
    wrong = Spec({**dense("fc1", None, "fc1"), "fc2.weight": (None, None), "fc2.bias": (None,)})  # fc2 left out
    with pytest.raises(LowlossError, match="OneHidden: permuting the units .* changes the outputs at OneHidden: fc2;"):
        check_spec(model, wrong, example_input((1, 8, 8)))


class Branches(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        if x.sum() > 0:  # a branch on a tensor's value: no fixed graph
            return self.fc(x)
        return x


def test_what_cannot_be_traced_or_run_is_one_line():
    with pytest.raises(LowlossError, match="Branches cannot be traced by torch.fx"):
        infer_spec(Branches(), example_input((4,)))
    with pytest.raises(LowlossError, match=r"ResNet rejects an input of shape \[2, 1, 32, 32\]"):
        infer_spec(torchvision.models.resnet18(num_classes=10), example_input((1, 32, 32)))
    with pytest.raises(LowlossError, match="ResNet has no module 'layer9' to freeze"):
        infer_spec(torchvision.models.resnet18(num_classes=10), example_input(IMAGE), freeze=["layer9"])


def test_a_built_in_architecture_keeps_its_own_spec_unless_a_module_is_frozen():
    model = build_model("fc3", (1, 8, 8), 10, SMALL["fc3"])
    assert model_spec(model, (1, 8, 8)) == model.spec()
    frozen = model_spec(model, (1, 8, 8), freeze=["fc2"])
    assert frozen.axes["fc2.weight"] == (None, None) and frozen.groups == []  # h1 is read by the frozen fc2


def random_images(shape: tuple[int, ...], n_train: int = 64, n_test: int = 32):
    """A dataset of random images and labels: enough to check that a path's points compute what its networks
    compute."""
    from lowloss.training.data import Dataset

    generator = torch.Generator().manual_seed(0)
    return Dataset("random", torch.randn((n_train, *shape), generator=generator),
                   torch.randint(0, 10, (n_train,), generator=generator),
                   torch.randn((n_test, *shape), generator=generator),
                   torch.randint(0, 10, (n_test,), generator=generator), 10)  # fmt: skip


def accuracy(model: nn.Module, params: dict, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((torch.func.functional_call(model.eval(), params, (x,)).argmax(1) == y).float().mean())


@pytest.mark.parametrize("method", ["linear", "arc", "ot", "weight-matching", "arc+repair", "weight-matching+repair"])
def test_every_method_without_stages_runs_on_an_inferred_spec_and_ends_at_both_networks(method):
    """A user's module (skip, gate, concatenation, BatchNorm): each path starts at A and ends at B exactly, and its
    evaluated endpoints are the two networks' own accuracies."""
    from lowloss.evaluate import evaluate_path, point_fixes
    from lowloss.methods import Context, Options, get_method

    shape = (3, 8, 8)
    torch.manual_seed(0)
    model_a, model_b = SkipGateCat(), SkipGateCat()
    theta_a, theta_b = (dict(model.state_dict()) for model in (model_a, model_b))
    network = Network(model_a, model_spec(model_a, shape))
    data = random_images(shape)
    chosen = get_method(method)
    ctx = Context(network, data, Options(progress=False))
    chosen.check(network, "SkipGateCat", ctx)
    path = chosen.build(theta_a, theta_b, ctx)
    assert all(torch.equal(path.theta_a[key], theta_a[key]) for key in theta_a)
    assert all(torch.equal(path.theta_b[key], theta_b[key]) for key in theta_b)
    fixes = point_fixes(network, data.x_train, repair_batches=1 if chosen.repair else None)
    table = evaluate_path(network, path, data, points=3, progress=False, fixes=list(fixes.values()))
    for split, (x, y) in (("train", data.split("train")), ("test", data.split("test"))):
        rows = table[table["split"] == split].sort_values("position", kind="stable")
        assert rows["acc"].iloc[0] == pytest.approx(accuracy(model_a, theta_a, x, y))
        assert rows["acc"].iloc[-1] == pytest.approx(accuracy(model_a, theta_b, x, y))


def test_the_route_and_its_refusal_on_inferred_specs():
    """The layer-wise route runs through an inferred ResNet's four residual stages (with BatchNorm statistics
    measured at every point) and is refused, in one line, for a network with a concatenation."""
    from lowloss.evaluate import evaluate_path, point_fixes
    from lowloss.methods import Context, Options, get_method

    torch.manual_seed(0)
    resnet_a, resnet_b = (torchvision.models.resnet18(num_classes=10) for _ in range(2))
    shape = (3, 16, 16)
    network = Network(resnet_a, model_spec(resnet_a, shape))
    data = random_images(shape, n_train=64, n_test=16)
    ctx = Context(network, data, Options(progress=False, bn_batches=1, wa_breakpoints=2))
    route = get_method("linear+wa")
    route.check(network, "resnet18", ctx)
    theta_a, theta_b = (dict(model.state_dict()) for model in (resnet_a, resnet_b))
    path = route.build(theta_a, theta_b, ctx)
    assert len(network.stages) == 4 and sorted({leg.stage for leg in path}) == [1, 2, 3, 4, 5]  # and the head
    fixes = point_fixes(network, data.x_train, bn_batches=1)
    table = evaluate_path(network, path, data, points=2, progress=False, fixes=list(fixes.values()))
    assert table["acc"].between(0, 1).all() and len(table) == 2 * 2 * len(path)
    cat = SkipGateCat()
    refused = Network(cat, model_spec(cat, (3, 8, 8)))
    with pytest.raises(LowlossError, match="method 'linear\\+wa' applies to networks that cut into stages"):
        route.check(refused, "SkipGateCat", Context(refused, data, Options(progress=False)))
