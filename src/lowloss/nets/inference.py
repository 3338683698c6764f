"""The spec of any network: its own `spec()` for the built-in architectures, else inferred from its graph.

Inference traces the model with torch.fx, runs it once on an example input for the shapes, and follows
every value's *units*: the axis that holds hidden units and which groups' units lie along it, in blocks (a
`torch.cat` lays groups side by side; a flatten after a conv gives each unit a block of positions). A
layer that computes units (Linear, Conv) starts a group; what acts unit by unit (activations, pooling,
dropout, norms, a depthwise conv) passes the units on; an elementwise sum, difference, product or
quotient of two values ties their groups into one (union-find: a residual stream, a squeeze-and-excitation
gate). The input's and the output's units keep their order, so every group tied to them stays in place.
An operation the inference does not know is refused by name, unless it lies in a module the caller
freezes: then the units it reads and writes stay in place.

`check_spec` then permutes every group at random, with random BatchNorm statistics: the outputs on the
example input must not change. Where they do, the first operation whose output the permutation changes is
named, so no wrong spec passes silently. Written by hand because no maintained library infers such a spec
for an arbitrary module (torch.fx gives the graph, not the symmetry).
"""

from __future__ import annotations

import copy
import math
import operator
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from lowloss.errors import LowlossError
from lowloss.nets.spec import STATISTICS, Axes, Spec, permute

Block = tuple[int, int, int]
"""(group id, units, entries per unit) of one group's units along an axis."""


@dataclass(frozen=True)
class Units:
    """Where a value holds units: axis `dim` of a tensor of rank `rank`, the blocks along it in order."""

    dim: int
    rank: int
    blocks: tuple[Block, ...]

    @property
    def length(self) -> int:
        return sum(n * k for _, n, k in self.blocks)

    def moved(self, dim: int, rank: int) -> Units:
        return Units(dim, rank, self.blocks)


class Frozen:
    """A value whose units are unknown and stay in place (the output of a frozen module)."""


class Param:
    """A parameter or buffer read by `get_attr`: its state-dict key."""

    def __init__(self, key: str):
        self.key = key


FROZEN = Frozen()
UNIT_WISE_MODULES = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish, nn.Hardswish,
    nn.Hardsigmoid, nn.Sigmoid, nn.Tanh, nn.Softplus, nn.Hardtanh, nn.Identity, nn.Dropout, nn.Dropout1d,
    nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.Softmax, nn.LogSoftmax,
)  # fmt: skip
"""Modules that act on every unit alike (in eval mode); a softmax over the units commutes with reordering them."""
SPATIAL_MODULES = (
    nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d, nn.AdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d,
    nn.Upsample, nn.ZeroPad2d, nn.ConstantPad2d, nn.ReflectionPad2d, nn.ReplicationPad2d,
)  # fmt: skip
"""Modules that act on the positions of every channel alike (channels on axis 1)."""
UNIT_WISE_FUNCTIONS = {
    F.relu, F.relu6, F.leaky_relu, F.elu, F.selu, F.celu, F.gelu, F.silu, F.mish, F.hardswish, F.hardsigmoid,
    F.hardtanh, F.softplus, F.dropout, F.dropout1d, F.dropout2d, F.softmax, F.log_softmax, F.sigmoid, F.tanh,
    torch.relu, torch.sigmoid, torch.tanh, torch.exp, torch.abs, torch.sqrt, torch.rsqrt, torch.clamp, torch.neg,
    torch.softmax, torch.log_softmax, operator.neg,
}  # fmt: skip
SPATIAL_FUNCTIONS = {
    F.max_pool1d, F.max_pool2d, F.max_pool3d, F.avg_pool1d, F.avg_pool2d, F.avg_pool3d, F.adaptive_avg_pool1d,
    F.adaptive_avg_pool2d, F.adaptive_avg_pool3d, F.adaptive_max_pool1d, F.adaptive_max_pool2d, F.interpolate,
    F.pad,
}  # fmt: skip
ELEMENTWISE = {operator.add, operator.sub, operator.mul, operator.truediv, torch.add, torch.sub, torch.mul, torch.div}
UNIT_WISE_METHODS = {"relu", "sigmoid", "tanh", "contiguous", "clone", "float", "double", "to", "type_as", "detach",
                     "exp", "abs", "sqrt", "clamp", "neg", "softmax", "log_softmax", "relu_", "sigmoid_", "expand",
                     "expand_as"}  # fmt: skip
ELEMENTWISE_METHODS = {"add", "sub", "mul", "div", "add_", "mul_", "sub_", "div_"}
REDUCTIONS = {"mean", "sum", "amax", "amin"}
CHECK_TOLERANCE = 1e-4
"""Largest change of the outputs, relative to their scale, that a permutation of units may cause (rounding)."""


def model_spec(model: nn.Module, input_shape: Sequence[int], freeze: Sequence[str] = ()) -> Spec:
    """The spec of `model` for inputs of `input_shape` (without the batch axis): the model's own `spec()` when
    it has one and nothing is frozen, else the spec inferred from its torch.fx graph and checked by
    permuting every group at random. `freeze` names modules whose units stay in place. Raises one line
    naming what breaks the symmetry."""
    if hasattr(model, "spec") and not freeze:
        return model.spec()
    return infer_spec(model, example_input(input_shape), freeze)


def example_input(input_shape: Sequence[int], seed: int = 0) -> Tensor:
    """Two random inputs of `input_shape`: enough for the shapes and for the permutation check."""
    return torch.randn((2, *input_shape), generator=torch.Generator().manual_seed(seed))


def infer_spec(model: nn.Module, example: Tensor, freeze: Sequence[str] = (), check: bool = True) -> Spec:
    """The spec of `model` read off its graph (see the module docstring), checked on `example` unless `check` is
    False. Raises one line naming the module or operation that cannot be followed or breaks the symmetry."""
    model = model.eval()
    inference = _Inference(model, example, freeze)
    spec = inference.spec()
    if check:
        check_spec(model, spec, example, inference)
    return spec


def trace(model: nn.Module) -> fx.GraphModule:
    """`torch.fx.symbolic_trace`, its failure turned into one line naming the module."""
    try:
        return fx.symbolic_trace(model)
    except Exception as exc:  # fx raises many types (TraceError, TypeError, NotImplementedError …)
        detail = " ".join(str(exc).split())[:300]
        raise LowlossError(
            f"{type(model).__name__} cannot be traced by torch.fx ({type(exc).__name__}: {detail}); "
            f"a forward pass that branches on tensor values has no fixed graph"
        ) from None


class _UnionFind:
    """Group ids tied together; a group tied to a frozen one stays in place."""

    def __init__(self) -> None:
        self.parent: list[int] = []
        self.units: list[int] = []
        self.frozen: list[bool] = []
        self.origin: list[str] = []

    def new(self, units: int, origin: str, frozen: bool = False) -> int:
        self.parent.append(len(self.parent))
        self.units.append(units)
        self.frozen.append(frozen)
        self.origin.append(origin)
        return len(self.parent) - 1

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, i: int, j: int, where: str) -> None:
        i, j = self.find(i), self.find(j)
        if i == j:
            return
        if self.units[i] != self.units[j]:
            raise LowlossError(
                f"{where}: ties {self.units[i]} units of {self.origin[i]} to {self.units[j]} of "
                f"{self.origin[j]}; the inference cannot follow it"
            )
        first, second = sorted((i, j))
        self.parent[second] = first
        self.frozen[first] = self.frozen[first] or self.frozen[second]

    def freeze(self, i: int) -> None:
        self.frozen[self.find(i)] = True


class _Inference:
    """One pass over the traced graph: the units of every value and the ids on every parameter axis."""

    def __init__(self, model: nn.Module, example: Tensor, freeze: Sequence[str]):
        self.model, self.name = model, type(model).__name__
        self.graph = trace(model)
        try:
            ShapeProp(self.graph).propagate(example)
        except Exception as exc:
            detail = " ".join(str(exc).split())[:300]
            raise LowlossError(f"{self.name} rejects an input of shape {list(example.shape)} ({detail})") from None
        known = {name for name, _ in model.named_modules()}
        unknown = [name for name in freeze if name not in known]
        if unknown:
            raise LowlossError(f"{self.name} has no module {unknown[0]!r} to freeze")
        self.frozen_modules = tuple(freeze)
        self.shapes = {key: list(tensor.shape) for key, tensor in model.state_dict().items()}
        self.groups = _UnionFind()
        self.values: dict[fx.Node, object] = {}
        self.axes: dict[str, list[list[int] | None]] = {}
        self.created: dict[str, int] = {}  # module (or weight key) -> the group it computes
        for node in self.graph.graph.nodes:
            self.values[node] = self._visit(node)

    # --- results ------------------------------------------------------------------------------------

    @property
    def names(self) -> dict[int, str]:
        """Root id -> group name: the module that first computes the group (frozen groups have none)."""
        names: dict[int, str] = {}
        for origin, group in self.created.items():
            root = self.groups.find(group)
            if not self.groups.frozen[root]:
                names.setdefault(root, origin)
        return names

    def spec(self) -> Spec:
        """The spec: every state-dict key, its axes named by the group that first computes them (None: in place)."""
        names = self.names
        axes: dict[str, Axes] = {}
        for key, shape in self.shapes.items():
            entries = self.axes.get(key, [None] * len(shape))
            axes[key] = tuple(self._entry(key, entry, names) for entry in entries)
        return Spec(axes)

    def _entry(self, key: str, ids: list[int] | None, names: dict[int, str]) -> str | tuple[str, ...] | None:
        if ids is None:
            return None
        roots = [self.groups.find(i) for i in ids]
        if all(root not in names for root in roots):
            return None
        if any(root not in names for root in roots):
            raise LowlossError(
                f"{key}: an axis holds units that move beside units that stay in place "
                f"(a concatenation with the input or a frozen module's output)"
            )
        return names[roots[0]] if len(roots) == 1 else tuple(names[root] for root in roots)

    def units_of(self, node: fx.Node) -> Units | None:
        """The units of a node's value, or None when it holds none (or none the spec moves)."""
        value = self.values.get(node)
        return value if isinstance(value, Units) else None

    def group_name(self, group_id: int) -> str | None:
        """The name of the group an id belongs to (None: it stays in place)."""
        return self.names.get(self.groups.find(group_id))

    # --- one node -----------------------------------------------------------------------------------

    def _visit(self, node: fx.Node) -> object:
        if node.op == "placeholder":
            shape = self._shape(node)
            if shape is None or len(shape) < 2:
                return None
            return Units(1, len(shape), ((self.groups.new(shape[1], "the input", frozen=True), shape[1], 1),))
        if node.op == "get_attr":
            return Param(node.target)
        if node.op == "output":
            for value in self._leaves(self._value(node.args)):
                self._freeze_value(value)
            return None
        args = [self._value(arg) for arg in node.args]
        kwargs = {key: self._value(value) for key, value in node.kwargs.items()}
        if not any(isinstance(value, (Units, Frozen)) for value in self._leaves((args, kwargs))):
            return None  # shapes, sizes, asserts, constants: nothing that holds units
        if self._in_frozen_module(node):
            for value in self._leaves((args, kwargs)):
                self._freeze_value(value)
            return FROZEN
        if node.op != "call_module" and not any(isinstance(value, Units) for value in self._leaves((args, kwargs))):
            return FROZEN  # only units that stay in place come in: whatever the operation, nothing moves
        if node.op == "call_module":
            return self._module(node, self.model.get_submodule(node.target), args)
        if node.target is getattr:
            return None  # .shape, .dtype, …
        if node.op == "call_method":
            return self._method(node, args, kwargs)
        return self._function(node, args, kwargs)

    def _module(self, node: fx.Node, module: nn.Module, args: list) -> object:
        x = args[0]
        layer = isinstance(module, nn.Linear) or (isinstance(module, nn.modules.conv._ConvNd) and module.groups == 1)
        if isinstance(x, Frozen) and not layer:
            return FROZEN  # a layer reading units that stay in place still computes units of its own
        if isinstance(module, nn.Linear):
            return self._linear(node, x, node.target, module.out_features, module.bias is not None)
        if isinstance(module, nn.modules.conv._ConvNd) and not module.transposed:
            return self._conv(node, x, node.target, module.out_channels, module.groups, module.bias is not None)
        if isinstance(module, (nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm)):
            return self._norm(
                node,
                x,
                node.target,
                [name for name, _ in module.named_parameters()]
                + [name for name, _ in module.named_buffers() if name != "num_batches_tracked"],
            )
        if isinstance(module, nn.GroupNorm):
            if module.num_groups not in (1, module.num_channels):
                return self._unknown(node, f"GroupNorm with {module.num_groups} groups of channels")
            return self._norm(node, x, node.target, [name for name, _ in module.named_parameters()])
        if isinstance(module, nn.LayerNorm):
            keys = [f"{node.target}.{name}" for name, _ in module.named_parameters()]
            return self._layer_norm(node, x, len(module.normalized_shape), keys)
        if isinstance(module, nn.PReLU):
            if module.num_parameters > 1:
                self._set(f"{node.target}.weight", 0, self._ids(node, x, 1))
            return x
        if isinstance(module, UNIT_WISE_MODULES):
            return x
        if isinstance(module, SPATIAL_MODULES):
            return self._spatial(node, x)
        if isinstance(module, nn.Flatten):
            return self._flatten(node, x, module.start_dim, module.end_dim)
        return self._unknown(node, f"module {type(module).__name__}")

    def _function(self, node: fx.Node, args: list, kwargs: dict) -> object:
        target = node.target
        if target in ELEMENTWISE:
            return self._elementwise(node, args[0], args[1] if len(args) > 1 else kwargs.get("other"))
        if target in UNIT_WISE_FUNCTIONS:
            return args[0]
        if target in SPATIAL_FUNCTIONS:
            return self._spatial(node, args[0])
        if target in (torch.cat, torch.concat):
            return self._cat(node, args[0], args[1] if len(args) > 1 else kwargs.get("dim", 0))
        if target is torch.flatten:
            return self._flatten(node, args[0], *(args[1:] or [kwargs.get("start_dim", 0)]))
        if target in (torch.reshape,):
            return self._reshape(node, args[0])
        if target in (torch.mean, torch.sum, torch.amax, torch.amin):
            return self._reduce(node, args[0], args[1] if len(args) > 1 else kwargs.get("dim"))
        if target in (torch.permute, torch.transpose):
            return self._permute(node, args[0])
        if target is F.linear:
            return self._functional_linear(node, args, kwargs)
        if target is F.conv2d:
            return self._functional_conv(node, args, kwargs)
        if target is F.batch_norm:
            params = [
                args[i] if len(args) > i else kwargs.get(name)
                for i, name in ((1, "running_mean"), (2, "running_var"), (3, "weight"), (4, "bias"))
            ]
            return self._functional_norm(node, args[0], params)
        if target is F.layer_norm:
            shape = args[1] if len(args) > 1 else kwargs["normalized_shape"]
            params = [args[i] if len(args) > i else kwargs.get(name) for i, name in ((2, "weight"), (3, "bias"))]
            return self._layer_norm(node, args[0], len(shape), [p.key for p in params if isinstance(p, Param)])
        if target is F.group_norm:
            groups = args[1] if len(args) > 1 else kwargs["num_groups"]
            x = args[0]
            if isinstance(x, Units) and groups not in (1, x.length):
                return self._unknown(node, f"group_norm with {groups} groups of channels")
            params = [args[i] if len(args) > i else kwargs.get(name) for i, name in ((2, "weight"), (3, "bias"))]
            return self._functional_norm(node, x, params)
        return self._unknown(node, _describe(target))

    def _method(self, node: fx.Node, args: list, kwargs: dict) -> object:
        name, x = node.target, args[0]
        if isinstance(x, Frozen):
            return FROZEN
        if name in UNIT_WISE_METHODS:
            return x
        if name in ELEMENTWISE_METHODS:
            return self._elementwise(node, x, args[1] if len(args) > 1 else kwargs.get("other"))
        if name == "flatten":
            return self._flatten(node, x, *(args[1:] or [kwargs.get("start_dim", 0)]))
        if name in ("view", "reshape"):
            return self._reshape(node, x)
        if name in REDUCTIONS:
            return self._reduce(node, x, args[1] if len(args) > 1 else kwargs.get("dim"))
        if name in ("permute", "transpose"):
            return self._permute(node, x)
        if name in ("size", "dim"):
            return None
        return self._unknown(node, f"the tensor method .{name}()")

    # --- operations ---------------------------------------------------------------------------------

    def _linear(self, node: fx.Node, x: object, name: str, out_features: int, bias: bool) -> Units:
        """Units along the last axis become the weight's columns; the outputs are a new group."""
        shape = self._shape(node)
        if isinstance(x, Units) and x.dim != x.rank - 1:  # the layer mixes positions; the units pass through
            self._set(f"{name}.weight", 0, None)
            return x
        group = self.created.setdefault(name, self.groups.new(out_features, name))
        self._set(f"{name}.weight", 0, [group])
        self._set(f"{name}.weight", 1, self._read(node, x))
        if bias:
            self._set(f"{name}.bias", 0, [group])
        return Units(len(shape) - 1, len(shape), ((group, out_features, 1),))

    def _conv(self, node: fx.Node, x: object, name: str, out_channels: int, groups: int, bias: bool) -> Units:
        """A conv's filters are a new group; a depthwise conv (one input channel per group) carries its input's
        units on, each repeated out/in times."""
        shape = self._shape(node)
        units = self._require(node, x, axis=1)
        if groups == 1:
            group = self.created.setdefault(name, self.groups.new(out_channels, name))
            self._set(f"{name}.weight", 0, [group])
            self._set(f"{name}.weight", 1, self._read(node, units))
            if bias:
                self._set(f"{name}.bias", 0, [group])
            return Units(1, len(shape), ((group, out_channels, 1),))
        if groups != units.length or any(k != 1 for _, _, k in units.blocks):
            return self._unknown(node, f"a grouped convolution with {groups} groups")
        repeat = out_channels // groups
        ids = [group for group, _, _ in units.blocks]
        self._set(f"{name}.weight", 0, ids)
        if bias:
            self._set(f"{name}.bias", 0, ids)
        return Units(1, len(shape), tuple((group, n, repeat) for group, n, _ in units.blocks))

    def _norm(self, node: fx.Node, x: object, name: str, tensors: list[str]) -> Units:
        """Per-channel scale, shift and running statistics along the units (channels on axis 1)."""
        units = self._require(node, x, axis=1)
        ids = self._ids(node, units, 1)
        for tensor in tensors:
            self._set(f"{name}.{tensor}", 0, ids)
        return units

    def _layer_norm(self, node: fx.Node, x: object, normalized: int, keys: list[str]) -> object:
        """A LayerNorm's statistics span its normalised (last) axes, so reordering units among them changes
        nothing; its scale and shift (`keys`) follow the units where they lie along those axes."""
        units = self._require(node, x)
        axis = units.dim - (units.rank - normalized)
        if axis >= 0:
            for key in keys:
                self._set(key, axis, self._ids(node, units, units.dim))
        return units

    def _functional_linear(self, node: fx.Node, args: list, kwargs: dict) -> Units:
        weight, bias = args[1], args[2] if len(args) > 2 else kwargs.get("bias")
        if not isinstance(weight, Param):
            return self._unknown(node, "linear with a computed weight")
        out_features = self._param_shape(weight)[0]
        name = weight.key.removesuffix(".weight")
        units = self._linear(node, args[0], name, out_features, False)
        if isinstance(bias, Param):
            self._set(bias.key, 0, self._ids(node, units, units.dim))
        return units

    def _functional_conv(self, node: fx.Node, args: list, kwargs: dict) -> Units:
        weight, bias = args[1], args[2] if len(args) > 2 else kwargs.get("bias")
        groups = args[6] if len(args) > 6 else kwargs.get("groups", 1)
        if not isinstance(weight, Param):
            return self._unknown(node, "conv2d with a computed weight")
        units = self._conv(
            node, args[0], weight.key.removesuffix(".weight"), self._param_shape(weight)[0], groups, False
        )
        if isinstance(bias, Param):
            self._set(bias.key, 0, self._ids(node, units, 1))
        return units

    def _functional_norm(self, node: fx.Node, x: object, params: list) -> object:
        units = self._require(node, x, axis=1)
        ids = self._ids(node, units, 1)
        for param in params:
            if isinstance(param, Param):
                self._set(param.key, 0, ids)
        return units

    def _elementwise(self, node: fx.Node, a: object, b: object) -> object:
        """A sum, difference, product or quotient: two values with units tie their groups; a parameter that
        varies along the units (a learned per-channel scale) gets their groups on that axis."""
        if isinstance(a, Frozen) or isinstance(b, Frozen):
            for value in (a, b):
                self._freeze_value(value)
            return FROZEN
        if isinstance(a, Units) and isinstance(b, Units):
            return self._tie(node, a, b)
        units, other = (a, b) if isinstance(a, Units) else (b, a)
        if isinstance(other, Param):
            shape = self._param_shape(other)
            axis = units.dim - (units.rank - len(shape))
            if axis >= 0 and shape[axis] > 1:
                self._set(other.key, axis, self._ids(node, units, units.dim))
            rank = max(units.rank, len(shape))
            return units.moved(units.dim + rank - units.rank, rank)
        return units

    def _tie(self, node: fx.Node, a: Units, b: Units) -> Units:
        rank = max(a.rank, b.rank)
        dims = (a.dim + rank - a.rank, b.dim + rank - b.rank)
        if dims[0] != dims[1] or len(a.blocks) != len(b.blocks):
            return self._unknown(node, f"{_describe(node.target)} of values whose units lie differently")
        for (group_a, n_a, _), (group_b, n_b, _) in zip(a.blocks, b.blocks):
            if n_a != n_b:
                return self._unknown(node, f"{_describe(node.target)} of values whose units lie differently")
            self.groups.union(group_a, group_b, self._where(node))
        return Units(dims[0], rank, a.blocks if a.rank >= b.rank else b.blocks)

    def _cat(self, node: fx.Node, tensors: Sequence, dim: int) -> object:
        values = list(tensors)
        if any(isinstance(value, Frozen) for value in values):
            for value in values:
                self._freeze_value(value)
            return FROZEN
        if not all(isinstance(value, Units) for value in values):
            return self._unknown(node, "torch.cat of a value without units")
        first = values[0]
        if dim % first.rank != first.dim:  # along another axis: the parts must hold the same units
            for value in values[1:]:
                self._tie(node, first, value)
            return first
        if any(value.dim != first.dim for value in values):
            return self._unknown(node, "torch.cat of values whose units lie differently")
        return Units(first.dim, first.rank, tuple(block for value in values for block in value.blocks))

    def _flatten(self, node: fx.Node, x: object, start: int = 0, end: int = -1) -> object:
        if isinstance(x, Frozen):
            return FROZEN
        units = self._require(node, x)
        start, end = start % units.rank, end % units.rank
        rank = units.rank - (end - start)
        if units.dim < start:
            return units.moved(units.dim, rank)
        if units.dim > end:
            return units.moved(units.dim - (end - start), rank)
        if units.dim != start:
            return self._unknown(node, "a flatten that interleaves the units with the axes before them")
        in_shape = self._shape(node.args[0])
        per_unit = math.prod(in_shape[units.dim + 1 : end + 1])
        return Units(start, rank, tuple((group, n, k * per_unit) for group, n, k in units.blocks))

    def _reshape(self, node: fx.Node, x: object) -> object:
        """A view, reshape, squeeze or unsqueeze that keeps the units' axis whole: it may merge it with the axes
        after it (a flatten: each unit then spans their entries) or move it, never split it."""
        if isinstance(x, Frozen):
            return FROZEN
        units = self._require(node, x)
        before, after = self._shape(node.args[0]), self._shape(node)
        leading = math.prod(before[: units.dim])
        merges = {math.prod(before[units.dim : end]) for end in range(units.dim + 1, len(before) + 1)}
        for dim in range(len(after)):
            if math.prod(after[:dim]) == leading and after[dim] in merges:
                per_unit = after[dim] // before[units.dim]
                return Units(dim, len(after), tuple((group, n, k * per_unit) for group, n, k in units.blocks))
        return self._unknown(node, "a reshape that splits the units' axis")

    def _reduce(self, node: fx.Node, x: object, dim: object) -> object:
        if isinstance(x, Frozen):
            return FROZEN
        units = self._require(node, x)
        shape = self._shape(node)
        if dim is None:
            return None  # a reduction over everything holds no units
        dims = {d % units.rank for d in (dim if isinstance(dim, (list, tuple)) else [dim])}
        if units.dim in dims:
            return None  # reordering the units does not change a sum or mean over them
        if len(shape) == units.rank:
            return units  # keepdim
        return units.moved(units.dim - sum(d < units.dim for d in dims), len(shape))

    def _permute(self, node: fx.Node, x: object) -> object:
        if isinstance(x, Frozen):
            return FROZEN
        units = self._require(node, x)
        dims = list(node.args[1:]) if node.target != "permute" or len(node.args) > 2 else list(node.args[1])
        if node.target in ("transpose", torch.transpose):
            order = list(range(units.rank))
            a, b = (d % units.rank for d in dims[:2])
            order[a], order[b] = order[b], order[a]
        else:
            order = [d % units.rank for d in dims]
        return units.moved(order.index(units.dim), units.rank)

    def _spatial(self, node: fx.Node, x: object) -> object:
        if isinstance(x, Frozen):
            return FROZEN
        units = self._require(node, x, axis=1)
        return units.moved(1, len(self._shape(node)))

    # --- bookkeeping --------------------------------------------------------------------------------

    def _unknown(self, node: fx.Node, what: str) -> Frozen:
        """An operation the inference does not know: refused by name (frozen modules never get here)."""
        raise LowlossError(
            f"{self._where(node)}: {what} reads hidden units and the inference cannot see its "
            f"symmetry; pass --freeze {self._freeze_hint(node)} to keep its units in place"
        )

    def _freeze_hint(self, node: fx.Node) -> str:
        """The module to freeze for `node`: the one it runs in, else the module whose output it reads."""
        if self._module_path(node):
            return self._module_path(node)
        readers = [arg.target for arg in node.all_input_nodes if arg.op == "call_module"]
        return readers[0] if readers else "MODULE"

    def _require(self, node: fx.Node, x: object, axis: int | None = None) -> Units:
        if not isinstance(x, Units):
            self._unknown(node, f"{_describe(node.target)} of a value without units")
        if axis is not None and x.dim != axis:
            self._unknown(node, f"{_describe(node.target)} of a value whose units lie on axis {x.dim}, not {axis}")
        return x

    def _read(self, node: fx.Node, x: object) -> list[int] | None:
        """The ids a layer's input axis holds (None: the units stay in place)."""
        if isinstance(x, Frozen) or x is None:
            return None
        if len({k for _, _, k in x.blocks}) > 1:
            self._unknown(node, "a layer reading groups with different entries per unit")
        return [group for group, _, _ in x.blocks]

    def _ids(self, node: fx.Node, units: Units, dim: int) -> list[int]:
        if any(k != 1 for _, _, k in units.blocks):
            self._unknown(node, f"{_describe(node.target)} per entry of units that span several entries")
        return [group for group, _, _ in units.blocks]

    def _set(self, key: str, axis: int, ids: list[int] | None) -> None:
        """Record the ids along `axis` of tensor `key`; a tensor used twice ties what it meets."""
        entries = self.axes.setdefault(key, [None] * len(self.shapes[key]))
        if ids is None or entries[axis] is None:
            entries[axis] = entries[axis] if ids is None else list(ids)
            return
        if len(entries[axis]) != len(ids):
            raise LowlossError(f"{key}: used twice on inputs of different structure; the inference cannot follow it")
        for old, new in zip(entries[axis], ids):
            self.groups.union(old, new, key)

    def _freeze_value(self, value: object) -> None:
        if isinstance(value, Units):
            for group, _, _ in value.blocks:
                self.groups.freeze(group)

    def _in_frozen_module(self, node: fx.Node) -> bool:
        path = self._module_path(node)
        return any(path == name or path.startswith(name + ".") for name in self.frozen_modules if path)

    def _module_path(self, node: fx.Node) -> str:
        if node.op == "call_module":
            return node.target
        stack = node.meta.get("nn_module_stack") or {}
        return next(reversed(stack)) if stack else ""

    def _where(self, node: fx.Node) -> str:
        path = self._module_path(node)
        what = f".{node.target}()" if node.op == "call_method" else _describe(node.target)
        inputs = [arg.target if arg.op == "call_module" else arg.name for arg in node.all_input_nodes]
        source = f" of {inputs[0]}" if node.op != "call_module" and inputs else ""
        return f"{self.name}: {what}{source}" + (f" in {path}" if path and path != node.target else "")

    def _value(self, arg: object) -> object:
        if isinstance(arg, fx.Node):
            return self.values.get(arg)
        if isinstance(arg, (list, tuple)):
            return type(arg)(self._value(a) for a in arg)
        return arg

    def _leaves(self, value: object):
        if isinstance(value, (list, tuple)):
            for item in value:
                yield from self._leaves(item)
        elif isinstance(value, dict):
            for item in value.values():
                yield from self._leaves(item)
        else:
            yield value

    def _shape(self, node: object) -> list[int] | None:
        meta = node.meta.get("tensor_meta") if isinstance(node, fx.Node) else None
        return list(meta.shape) if meta is not None and hasattr(meta, "shape") else None

    def _param_shape(self, param: Param) -> list[int]:
        return self.shapes[param.key]


def _describe(target: object) -> str:
    """A node's operation in words: a module path, `torch.matmul`, `.view()`."""
    if isinstance(target, str):
        return target
    module = getattr(target, "__module__", None) or ""
    name = getattr(target, "__name__", repr(target))
    if module in ("_operator", "operator"):
        return f"operator.{name}"
    return f"{module.replace('torch.nn.functional', 'F').replace('torch._C._nn', 'F')}.{name}".lstrip(".")


def check_spec(
    model: nn.Module, spec: Spec, example: Tensor, inference: _Inference | None = None, seed: int = 0
) -> None:
    """Permute every group at random, with random BatchNorm statistics, and require the outputs on `example` to
    stay the same; else raise one line naming the first operation whose output the permutation changes."""
    params = _with_random_statistics(model, seed)
    generator = torch.Generator().manual_seed(seed)
    perms = {group: torch.randperm(spec.size(params, group), generator=generator) for group in spec.groups}
    permuted = permute(params, spec, perms)
    model = model.eval()
    with torch.no_grad():
        reference = torch.func.functional_call(model, params, (example,))
        outputs = torch.func.functional_call(model, permuted, (example,))
    if _close(reference, outputs):
        return
    culprit = _first_change(params, permuted, perms, example, inference or _Inference(model, example, ()))
    raise LowlossError(
        f"{type(model).__name__}: permuting the units of the inferred groups changes the outputs"
        f"{culprit}; pass --freeze for that module to keep its units in place"
    )


def _with_random_statistics(model: nn.Module, seed: int) -> dict[str, Tensor]:
    """The model's tensors, running means and variances drawn at random (a check with the usual 0 and 1 would
    not see statistics left unpermuted)."""
    generator = torch.Generator().manual_seed(seed + 1)
    params = dict(model.state_dict())
    for key, tensor in params.items():
        kind = key.rpartition(".")[2]
        if kind == STATISTICS[0] and tensor.is_floating_point():
            params[key] = torch.randn(tensor.shape, generator=generator).to(tensor)
        elif kind == STATISTICS[1] and tensor.is_floating_point():
            params[key] = (0.5 + torch.rand(tensor.shape, generator=generator)).to(tensor)
    return params


def _close(a: object, b: object) -> bool:
    if isinstance(a, Tensor):
        scale = max(float(a.abs().max()), 1.0) if a.numel() else 1.0
        return a.shape == b.shape and bool((a - b).abs().max() <= CHECK_TOLERANCE * scale) if a.numel() else True
    if isinstance(a, (list, tuple)):
        return all(_close(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return all(_close(a[key], b[key]) for key in a)
    return True


def _first_change(
    params: dict[str, Tensor], permuted: dict[str, Tensor], perms: dict[str, Tensor], example: Tensor,
    inference: _Inference,
) -> str:  # fmt: skip
    """` at <operation>`: the first node whose output, with its units put in the permuted order, differs from
    the permuted network's."""
    plain, moved = _node_outputs(inference.graph, params, example), _node_outputs(inference.graph, permuted, example)
    for node in inference.graph.graph.nodes:
        units = inference.units_of(node)
        a, b = plain.get(node), moved.get(node)
        if not isinstance(a, Tensor) or not isinstance(b, Tensor):
            continue
        if units is not None:
            a = _reorder(a, units, inference, perms)
        if not _close(a, b):
            return f" at {inference._where(node)}"
    return ""


def _reorder(value: Tensor, units: Units, inference: _Inference, perms: dict[str, Tensor]) -> Tensor:
    """`value` with the units along its units axis in the permuted order the spec gives them."""
    parts, start = [], 0
    for group_id, n, k in units.blocks:
        block = value.narrow(units.dim, start, n * k)
        name = inference.group_name(group_id)
        if name is not None:
            shape = list(block.shape)
            view = block.movedim(units.dim, 0).reshape(n, k, -1)[perms[name]]
            block = view.reshape([n * k] + shape[: units.dim] + shape[units.dim + 1 :]).movedim(0, units.dim)
        parts.append(block)
        start += n * k
    return torch.cat(parts, units.dim)


def _node_outputs(original: fx.GraphModule, params: dict[str, Tensor], example: Tensor) -> dict[fx.Node, object]:
    """Every node's output on `example` with `params` (an fx.Interpreter on a copy that holds them)."""
    outputs: dict[fx.Node, object] = {}
    graph = copy.deepcopy(original)
    graph.load_state_dict(params)
    nodes = dict(zip(graph.graph.nodes, original.graph.nodes))

    class Keep(fx.Interpreter):
        def run_node(self, node: fx.Node) -> object:
            outputs[nodes[node]] = result = super().run_node(node)
            return result

    with torch.no_grad():
        Keep(graph).run(example)
    return outputs
