"""Where each folded BN lives in the graph: the layer it was folded into, that layer's weight and
bias, and the tensor whose statistics the BN described.

A file records each folded BN's `folded_into`: an ONNX node's name for a graph-level fold
(`foldserve fold`), a torch module's path for foldserve's own exports, whose graphs name nodes
otherwise. Those exports tap every BN that does not read the model input (`contract.shift`), and
the tap's tensor is the folded layer's output (or input): the taps find those layers, and a BN
folded into the same module finds its layer through them. A BN over the model input, folded
forward, is in the one layer that reads the input.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from foldserve.contract import BACKWARD, FORWARD, BNStats, Tap
from foldserve.core.adapt.onnx_file import GraphFileError, OnnxFile, attribute, label

LAYERS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
DEFAULT_DOMAINS = ("", "ai.onnx")


@dataclass
class Layer:
    """A layer that folded BNs: where its weight and bias are, and which BNs it holds.

    Attributes:
        node: the Conv/ConvTranspose/Gemm/MatMul node.
        position: its place in the graph's (topological) node order.
        bias_node: the node holding the bias: `node`, or a MatMul's following Add.
        bias: the bias initializer's name.
        forward: indices into the file's `bn_stats` of the BNs folded into its input, the one
            next to the layer first (folding order).
        backward: the same for its output, the one next to the layer first.
    """

    node: object
    position: int
    bias_node: object
    bias: str
    forward: list[int] = field(default_factory=list)
    backward: list[int] = field(default_factory=list)

    @property
    def weight(self) -> str:
        return self.node.input[1]

    @property
    def input(self) -> str:
        """The tensor the layer reads: the input of its forward-folded BNs."""
        return self.node.input[0]

    @property
    def output(self) -> str:
        """The tensor the layer (with its bias) writes: what its backward-folded BNs produced."""
        return self.bias_node.output[0]

    @property
    def op(self) -> str:
        return self.node.op_type

    @property
    def trans_b(self) -> int:
        return int(attribute(self.node, "transB", 0)) if self.op == "Gemm" else 0

    @property
    def groups(self) -> int:
        return int(attribute(self.node, "group", 1))


def find_layers(graph: OnnxFile, bn_stats: Sequence[BNStats], taps: Sequence[Tap]) -> list[Layer]:
    """Every layer that folded a BN of `bn_stats`, in graph order.

    Raises:
        GraphFileError: a BN whose layer cannot be found, or a layer whose weight or bias is not
            an initializer of its own; the message names the BN.
    """
    nodes = graph.nodes
    positions = {id(node): i for i, node in enumerate(nodes)}
    found = _by_label(nodes, bn_stats)
    found.update(_by_tap(graph, nodes, bn_stats, taps, found))
    modules = {bn_stats[i].folded_into: node for i, node in found.items()}
    layers: dict[int, Layer] = {}
    for index, stats in enumerate(bn_stats):
        node = found.get(index) or modules.get(stats.folded_into)
        if node is None and stats.reads_model_input and stats.direction == FORWARD:
            node = _input_layer(graph, nodes)
        if node is None:
            raise GraphFileError(
                f"BN {stats.layer!r}: its layer {stats.folded_into!r} is not in the graph"
            )
        layer = layers.get(id(node))
        if layer is None:
            layer = layers[id(node)] = _layer(graph, nodes, node, positions[id(node)], stats)
        (layer.forward if stats.direction == FORWARD else layer.backward).append(index)
    return sorted(layers.values(), key=lambda layer: layer.position)


def _is_layer(node) -> bool:
    return node.op_type in LAYERS and node.domain in DEFAULT_DOMAINS


def _by_label(nodes: list, bn_stats: Sequence[BNStats]) -> dict[int, object]:
    labels = {label(node): node for node in nodes if _is_layer(node)}
    return {i: labels[s.folded_into] for i, s in enumerate(bn_stats) if s.folded_into in labels}


def _by_tap(
    graph: OnnxFile, nodes: list, bn_stats: Sequence[BNStats], taps: Sequence[Tap], known: dict
) -> dict[int, object]:
    """The layers the taps show (foldserve's exports)."""
    producer = {name: node for node in nodes for name in node.output}
    by_layer = {tap.layer: tap for tap in taps}
    found = {}
    for index, stats in enumerate(bn_stats):
        tap = by_layer.get(stats.layer)
        if index in known or tap is None or tap.name not in producer:
            continue
        value = tap.name
        if producer[value].op_type == "ReduceMean":  # a conv's tap: averaged over space
            value = producer[value].input[0]
        if stats.direction == BACKWARD:
            node = producer.get(value)
            if node is not None and node.op_type == "Add":  # MatMul + bias
                node = next((producer.get(v) for v in node.input if v in producer), None)
        else:
            node = _only_reader(nodes, value)
        if node is not None and _is_layer(node):
            found[index] = node
    return found


def _only_reader(nodes: list, value: str):
    readers = [node for node in nodes if _is_layer(node) and node.input and node.input[0] == value]
    return readers[0] if len(readers) == 1 else None


def _input_layer(graph: OnnxFile, nodes: list):
    inputs = graph.graph_inputs
    return _only_reader(nodes, inputs[0]) if len(inputs) == 1 else None


def _layer(graph: OnnxFile, nodes: list, node, position: int, stats: BNStats) -> Layer:
    where = f"BN {stats.layer!r} (folded into {label(node)!r})"
    bias_node, slot = node, 2
    if node.op_type == "MatMul":
        adds = [n for n in nodes if n.op_type == "Add" and node.output[0] in n.input]
        if len(adds) != 1:
            raise GraphFileError(f"{where}: the MatMul's output is not read by one bias Add")
        bias_node = adds[0]
        slot = 1 - list(bias_node.input).index(node.output[0])
    if len(bias_node.input) <= slot or not bias_node.input[slot]:
        raise GraphFileError(f"{where}: the layer has no bias (a fold always gives it one)")
    if node.op_type == "Gemm" and any(
        attribute(node, name, 1.0) != 1.0 for name in ("alpha", "beta")
    ):
        raise GraphFileError(f"{where}: a Gemm with alpha or beta other than 1 was not folded")
    bias = bias_node.input[slot]
    for name in (node.input[1], bias):
        if not graph.is_initializer(name) or graph.uses(name) != 1:
            raise GraphFileError(f"{where}: {name!r} is not an initializer of this layer alone")
    return Layer(node, position, bias_node, bias)
