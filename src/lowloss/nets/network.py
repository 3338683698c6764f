"""A spec'd network seen as a chain of weight layers, with its forward pass cut at layer boundaries.

The layer-wise methods (§4.1) and the evaluation engine need more than a whole forward pass: the
input of one layer, the output of another, the rest of the network from there on. The model stays an
ordinary nn.Module; torch.fx traces its forward once and any stretch between two cuts is rebuilt as a
small GraphModule, called with `torch.func.functional_call` on whatever parameters are given. A cut is
`"input"`, `"output"`, or a weight layer's input or output (`before(layer)`, `after(layer)`).

Only cuts that one tensor crosses are allowed (true of every plain chain: MLPs, conv nets, VGG); a
network whose later layers read earlier values (a skip connection) is refused at such a cut.

The layer-wise route (§4.1, §4.2) walks the network stage by stage (`Network.stages`). In a chain a stage
is one hidden group. In a residual network the groups of a residual stage feed each other (the stream
feeds every block, every block adds into the stream), so they switch networks together: a stage is a
strongly connected set of groups, entered through one tensor and read, through one tensor, by layers
of later stages only.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch.fx as fx
import torch.nn.functional as F
from scipy.sparse import csgraph
from torch import Tensor, nn
from torch.func import functional_call

from lowloss.errors import LowlossError
from lowloss.nets.params import Params
from lowloss.nets.spec import Spec
from lowloss.nets.topology import ANY, LAYERED, ONE_HIDDEN, STAGED

INPUT, OUTPUT = "input", "output"
WEIGHT_MODULES = (nn.Linear, nn.Conv2d)
"""The modules whose weights are a layer of the chain: dense and conv."""


@dataclass(frozen=True)
class Layer:
    """A weight layer: its module name, the group it computes (None: the output) and the group it reads."""

    name: str
    module: nn.Module
    computes: str | None
    reads: str | tuple[str, ...] | None

    @property
    def weight(self) -> str:
        return f"{self.name}.weight"

    @property
    def bias(self) -> str | None:
        return f"{self.name}.bias" if self.module.bias is not None else None

    @property
    def keys(self) -> list[str]:
        return [self.weight] + ([self.bias] if self.bias else [])

    def own(self, params: Params) -> dict[str, Tensor]:
        """The layer's tensors of `params` under its module's own names (`weight`, `bias`): what
        `functional_call(layer.module, …)` takes."""
        return {key.rpartition(".")[2]: params[key] for key in self.keys}

    def rows(self, inputs: Tensor) -> Tensor:
        """The layer's input as least-squares rows (N', m): a dense layer's samples, or a conv layer's
        unfolded patches (one row per sample and output position, channel-major like the weight)."""
        if isinstance(self.module, nn.Conv2d):
            conv = self.module
            patches = F.unfold(inputs, conv.kernel_size, conv.dilation, conv.padding, conv.stride)
            return patches.transpose(1, 2).flatten(0, 1)
        return inputs.flatten(1)

    def output_rows(self, outputs: Tensor) -> Tensor:
        """The layer's output in the row layout of `rows`: (N', out_features or out_channels)."""
        if isinstance(self.module, nn.Conv2d):
            return outputs.movedim(1, -1).flatten(0, -2)
        return outputs


@dataclass(frozen=True)
class Stage:
    """A step of the layer-wise route: hidden groups that switch networks together.

    `keys` compute the groups' units (every tensor whose axis 0 is one of them: rows or filters, biases,
    normalisation tensors); `entry` is the cut where the stage's input enters it; `readers` are the layers
    of later stages (or the output layer) that read its units, all from one tensor.
    """

    groups: tuple[str, ...]
    keys: tuple[str, ...]
    entry: str
    readers: tuple[Layer, ...]


def before(layer: Layer | str) -> str:
    """The cut at a layer's input."""
    return f"{getattr(layer, 'name', layer)}:in"


def after(layer: Layer | str) -> str:
    """The cut at a layer's output (its pre-activation)."""
    return f"{getattr(layer, 'name', layer)}:out"


class Network:
    """`model` and its spec as an ordered list of weight layers with a cuttable forward pass.

    The spec is `spec` when given (an inferred one, `lowloss.nets.inference`), else the model's own `spec()`.
    """

    def __init__(self, model: nn.Module, spec: Spec | None = None):
        self.model = model.eval()
        self.spec: Spec = spec if spec is not None else model.spec()
        self.graph = fx.symbolic_trace(self.model)
        self._segments: dict[tuple[str, str], Segment] = {}
        calls = [
            node
            for node in self.graph.graph.nodes
            if node.op == "call_module" and isinstance(self.model.get_submodule(node.target), WEIGHT_MODULES)
        ]
        self._nodes = {node.target: node for node in calls}
        self.layers = [self._layer(node.target) for node in calls]
        if len(self._nodes) != len(calls):
            raise LowlossError(f"{type(model).__name__}: a weight layer is called twice; not a chain of layers")

    def _layer(self, name: str) -> Layer:
        weight_axes = self.spec.axes.get(f"{name}.weight")
        if weight_axes is None:
            raise LowlossError(f"{type(self.model).__name__}: layer {name!r} is not in the spec")
        return Layer(name, self.model.get_submodule(name), weight_axes[0], weight_axes[1])

    def layer(self, name: str) -> Layer:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise LowlossError(f"unknown layer {name!r} (layers: {', '.join(known.name for known in self.layers)})")

    def computing(self, group: str) -> Layer:
        """The layer whose outputs are `group`'s units."""
        return self._only([layer for layer in self.layers if layer.computes == group], group, "computes")

    def reading(self, group: str) -> Layer:
        """The layer that reads `group`'s units."""
        return self._only([layer for layer in self.layers if layer.reads == group], group, "reads")

    def _only(self, layers: list[Layer], group: str, verb: str) -> Layer:
        if len(layers) != 1:
            raise LowlossError(
                f"{type(self.model).__name__}: {len(layers)} layers {verb} group {group!r}; "
                f"a chain of layers has exactly one"
            )
        return layers[0]

    @cached_property
    def is_chain(self) -> bool:
        """Every hidden group is computed by one layer and read by the next, and every cut is clean."""
        groups = self.spec.groups
        if [layer.computes for layer in self.layers] != [*groups, None]:
            return False
        if [layer.reads for layer in self.layers] != [None, *groups]:
            return False
        covered = {key for layer in self.layers for key in layer.keys}
        if covered != set(self.spec.axes) or covered != set(self.model.state_dict()):
            return False
        try:
            for layer in self.layers:
                self.segment(INPUT, before(layer))
                self.segment(after(layer), OUTPUT)
        except LowlossError:
            return False
        return True

    @cached_property
    def topology(self) -> str:
        """ONE_HIDDEN or LAYERED for a chain of dense and conv layers (by its number of hidden groups), STAGED for
        another network that cuts into stages (a residual network), else ANY."""
        if self.is_chain:
            return ONE_HIDDEN if len(self.spec.groups) == 1 else LAYERED
        try:
            _ = self.stages  # raises for a network that does not cut into stages
        except LowlossError:
            return ANY
        return STAGED

    @cached_property
    def stages(self) -> list[Stage]:
        """The route's stages, input side first.

        Groups that feed each other switch together: the strongly connected components of the graph in which a
        layer links the group it reads to the group it computes (scipy's `csgraph`). A component entered
        through more than one tensor is merged with the one before it (a residual stage's first block, whose
        inner group the stream does not feed back, joins its stage). Raises a one-line error for a network
        that does not cut into stages.
        """
        name = type(self.model).__name__
        if set(self.spec.axes) != set(self.model.state_dict()):
            raise LowlossError(f"{name}: the spec and the state dict hold different tensors")
        groups = self.spec.groups
        index = {group: i for i, group in enumerate(groups)}
        links = np.zeros((len(groups), len(groups)), dtype=bool)
        for layer in self.layers:
            if isinstance(layer.reads, tuple):
                raise LowlossError(
                    f"{name}: layer {layer.name!r} reads several groups side by side (a concatenation); "
                    f"the network does not cut into stages"
                )
            if layer.reads is not None and layer.computes is not None:
                links[index[layer.reads], index[layer.computes]] = True
        _, labels = csgraph.connected_components(links, directed=True, connection="strong")
        merged: list[tuple[str, ...]] = []
        for label in dict.fromkeys(labels):  # components by their first group, input side first
            merged.append(tuple(group for group in groups if labels[index[group]] == label))
            while len(merged) > 1 and len(self._inputs(self._entering(merged[-1]))) > 1:
                last = merged.pop()
                merged[-1] += last
        stages = [self._stage(stage_groups) for stage_groups in merged]
        position = {group: s for s, stage in enumerate(stages) for group in stage.groups}
        for layer in self.layers:
            feeds_back = (
                layer.reads is not None
                and layer.computes is not None
                and (position[layer.computes] < position[layer.reads])
            )
            if feeds_back:
                raise LowlossError(
                    f"{name}: layer {layer.name!r} feeds an earlier stage; the network does not cut into stages"
                )
        return stages

    def _entering(self, groups: tuple[str, ...]) -> list[Layer]:
        """The layers computing `groups` from values outside them."""
        return [layer for layer in self.layers if layer.computes in groups and layer.reads not in groups]

    def _inputs(self, layers: list[Layer]) -> set[fx.Node]:
        return {self._node(before(layer)) for layer in layers}

    def _stage(self, groups: tuple[str, ...]) -> Stage:
        name = type(self.model).__name__
        entering = self._entering(groups)
        readers = tuple(layer for layer in self.layers if layer.reads in groups and layer.computes not in groups)
        for cuts, what in ((entering, "enter"), (readers, "read")):
            if len(self._inputs(list(cuts))) != 1:
                raise LowlossError(
                    f"{name}: the layers that {what} stage {'+'.join(groups)} do not read one tensor; "
                    f"the network does not cut into stages"
                )
        entry = before(entering[0])
        self.segment(entry, before(readers[0]))  # the stage's inside reads nothing from before its entry
        keys = tuple(key for key, axes in self.spec.axes.items() if axes and axes[0] in groups)
        return Stage(groups, keys, entry, readers)

    def segment(self, start: str, stop: str) -> Segment:
        """The forward pass from cut `start` to cut `stop` (cached)."""
        key = (start, stop)
        if key not in self._segments:
            self._segments[key] = Segment(self._extract(start, stop))
        return self._segments[key]

    def run(self, params: Params, x: Tensor, start: str = INPUT, stop: str = OUTPUT) -> Tensor:
        """`segment(start, stop)` applied to x with `params`."""
        return self.segment(start, stop)(params, x)

    def _node(self, cut: str) -> fx.Node:
        nodes = list(self.graph.graph.nodes)
        if cut == INPUT:
            return next(node for node in nodes if node.op == "placeholder")
        if cut == OUTPUT:
            return next(node for node in nodes if node.op == "output").args[0]
        name, _, side = cut.rpartition(":")
        if name not in self._nodes or side not in ("in", "out"):
            raise LowlossError(f"unknown cut {cut!r} (layers: {', '.join(self._nodes)})")
        node = self._nodes[name]
        return node if side == "out" else node.args[0]

    def _extract(self, start: str, stop: str) -> fx.GraphModule:
        """A GraphModule computing `stop` from the value at `start`; refuses cuts that more than one value crosses."""
        nodes = list(self.graph.graph.nodes)
        first, last = self._node(start), self._node(stop)
        begin, end = nodes.index(first), nodes.index(last)
        if end < begin:
            raise LowlossError(f"cut {stop!r} comes before {start!r}")
        graph = fx.Graph()
        env = {first: graph.placeholder("x")}
        for node in nodes[begin + 1 : end + 1]:
            try:
                env[node] = graph.node_copy(node, lambda n: env[n])
            except KeyError:
                raise LowlossError(
                    f"{type(self.model).__name__}: the stretch {start} -> {stop} reads values "
                    f"from before {start}; the network cannot be cut there"
                ) from None
        graph.output(env[last])
        return fx.GraphModule(self.graph, graph).eval()


class Segment:
    """A stretch of the network, called functionally with the tensors it uses (others are ignored): its
    parameters and buffers (BatchNorm's running statistics are part of a point too)."""

    def __init__(self, module: fx.GraphModule):
        self.module = module
        self.keys = frozenset(module.state_dict())

    def __call__(self, params: Params, x: Tensor) -> Tensor:
        return functional_call(self.module, {key: params[key] for key in self.keys}, (x,))

    def bound(self, params: Params) -> nn.Module:
        """The stretch as a module of its own holding `params`: callable from several threads at once (a functional
        call swaps tensors in and out of the one shared module while it runs)."""
        module = copy.deepcopy(self.module)
        module.load_state_dict({key: params[key] for key in self.keys}, assign=True)
        return module
