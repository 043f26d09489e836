"""Questions about an ONNX graph that the fold rules ask: who produces and who reads a value,
whether a value is a constant (and which), attributes with their defaults, ranks.

`GraphIndex` is a read-only snapshot of a model's main graph; the fold rebuilds it after every
rewrite, so it never goes stale.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import numpy_helper

from foldserve.training.onnx_fold import constants

# ONNX's default domain has two spellings.
DEFAULT_DOMAINS = ("", "ai.onnx")
BATCH_NORM = "BatchNormalization"


@dataclass(frozen=True)
class ValueTypes:
    """What shape inference tells about the graph's values: their ranks and element types."""

    ranks: dict[str, int] = field(default_factory=dict)
    elem_types: dict[str, int] = field(default_factory=dict)


class GraphIndex:
    """Producers, consumers, constants and ranks of one model's main graph.

    Args:
        model: the model; its graph is read, never changed.
        types: from `infer_types` on the model (names it lacks have unknown ranks).
    """

    def __init__(self, model: onnx.ModelProto, types: ValueTypes | None = None) -> None:
        graph = model.graph
        self.model = model
        types = types or ValueTypes()
        self.ranks, self.elem_types = types.ranks, types.elem_types
        self.initializers = {t.name: t for t in graph.initializer}
        self.graph_inputs = {i.name for i in graph.input}
        self.graph_outputs = {o.name for o in graph.output}
        self.producer: dict[str, onnx.NodeProto] = {}
        self.position: dict[str, int] = {}
        self.consumers: dict[str, list[tuple[onnx.NodeProto, int]]] = defaultdict(list)
        self.subgraph_reads: dict[str, int] = defaultdict(int)
        self._computed: dict[str, np.ndarray | None] = {}
        for position, node in enumerate(graph.node):
            for name in node.output:
                if name:
                    self.producer[name] = node
                    self.position[name] = position
            for slot, name in enumerate(node.input):
                if name:
                    self.consumers[name].append((node, slot))
            for subgraph in _subgraphs(node):
                for name in _names_read(subgraph):
                    self.subgraph_reads[name] += 1
        self.opset = next((o.version for o in model.opset_import if o.domain in DEFAULT_DOMAINS), 0)

    def uses(self, name: str) -> int:
        """Every place that reads ``name``: node inputs, subgraph bodies and graph outputs."""
        return (
            len(self.consumers.get(name, ()))
            + self.subgraph_reads.get(name, 0)
            + (name in self.graph_outputs)
        )

    def only_consumer(self, name: str) -> tuple[onnx.NodeProto, int] | None:
        """The one (node, input slot) that reads ``name``, when nothing else reads it at all."""
        readers = self.consumers.get(name, ())
        return readers[0] if len(readers) == 1 and self.uses(name) == 1 else None

    def is_model_input(self, name: str) -> bool:
        """A graph input the caller feeds (not an initializer listed among the inputs)."""
        return name in self.graph_inputs and name not in self.initializers

    def constant(self, name: str) -> np.ndarray | None:
        """The value of ``name`` when it is fixed in the file, else None.

        Constant means: stored in the file (`stored`), or computed from stored constants alone
        by a small subgraph (`foldserve.training.onnx_fold.constants`), evaluated once.
        """
        value = self.stored(name)
        if value is None and name in self.producer:
            if name not in self._computed:
                self._computed[name] = constants.evaluate(self, name)
            value = self._computed[name]
        return value

    def stored(self, name: str) -> np.ndarray | None:
        """The value of ``name`` when the file holds it as it is: an initializer that is not
        also a graph input (one that is, as in IR 3 files, can be fed at run time), a `Constant`
        node's value, or an `Identity` of either (torch's exporter writes one where two
        parameters hold equal values)."""
        if name in self.initializers:
            if name in self.graph_inputs:
                return None
            return numpy_helper.to_array(self.initializers[name])
        node = self.producer.get(name)
        if node is None or node.domain not in DEFAULT_DOMAINS:
            return None
        if node.op_type == "Identity":
            return self.stored(node.input[0])
        if node.op_type == "Constant":
            return _constant_node_value(node)
        return None

    def dtype(self, name: str) -> np.dtype | None:
        """The element type of a constant, without decoding it when it is an initializer."""
        if name in self.initializers:
            return onnx.helper.tensor_dtype_to_np_dtype(self.initializers[name].data_type)
        value = self.constant(name)
        return None if value is None else value.dtype

    def bn_nodes(self) -> list[onnx.NodeProto]:
        """The main graph's BatchNormalization nodes, in graph order."""
        return [n for n in self.model.graph.node if is_batch_norm(n)]


def is_batch_norm(node: onnx.NodeProto) -> bool:
    return node.op_type == BATCH_NORM and node.domain in DEFAULT_DOMAINS


def attribute(node: onnx.NodeProto, name: str, default: object = None) -> object:
    """A node's attribute value (ints, floats, strings decoded), or ``default`` when absent."""
    for attr in node.attribute:
        if attr.name == name:
            value = onnx.helper.get_attribute_value(attr)
            return value.decode() if isinstance(value, bytes) else value
    return default


def label(node: onnx.NodeProto) -> str:
    """The name a report gives a node: its name, or its first output's when it has none."""
    return node.name or node.output[0]


def infer_types(model: onnx.ModelProto) -> ValueTypes:
    """Ranks and element types of the graph's values, as far as ONNX shape inference
    (non-strict) can tell."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    except Exception:  # inference is a help, not a requirement: unknown ranks are refused later
        inferred = model
    graph = inferred.graph
    types = ValueTypes()
    for value in [*graph.input, *graph.value_info, *graph.output]:
        if not value.type.HasField("tensor_type"):
            continue
        tensor = value.type.tensor_type
        if tensor.elem_type:
            types.elem_types[value.name] = tensor.elem_type
        if tensor.HasField("shape"):
            types.ranks[value.name] = len(tensor.shape.dim)
    for tensor in graph.initializer:
        types.ranks[tensor.name] = len(tensor.dims)
        types.elem_types[tensor.name] = tensor.data_type
    return types


def count_batch_norms(graph: onnx.GraphProto) -> int:
    """BatchNormalization nodes in ``graph`` and every subgraph in it."""
    return sum(
        is_batch_norm(node) + sum(count_batch_norms(g) for g in _subgraphs(node))
        for node in graph.node
    )


def subgraph_batch_norms(graph: onnx.GraphProto) -> Iterator[tuple[onnx.NodeProto, str]]:
    """BatchNormalization nodes inside subgraphs, each with the label of its outermost owner."""
    for node in graph.node:
        for subgraph in _subgraphs(node):
            for inner in walk(subgraph):
                if is_batch_norm(inner):
                    yield inner, label(node)


def walk(graph: onnx.GraphProto) -> Iterator[onnx.NodeProto]:
    """Every node of ``graph`` and of the subgraphs in it."""
    for node in graph.node:
        yield node
        for subgraph in _subgraphs(node):
            yield from walk(subgraph)


def _subgraphs(node: onnx.NodeProto) -> list[onnx.GraphProto]:
    graphs: list[onnx.GraphProto] = []
    for attr in node.attribute:
        if attr.type == onnx.AttributeProto.GRAPH:
            graphs.append(attr.g)
        elif attr.type == onnx.AttributeProto.GRAPHS:
            graphs.extend(attr.graphs)
    return graphs


def _names_read(graph: onnx.GraphProto) -> Iterator[str]:
    """Every name the nodes of ``graph`` and its own subgraphs read (outer-scope ones too)."""
    for node in walk(graph):
        yield from (name for name in node.input if name)


def _constant_node_value(node: onnx.NodeProto) -> np.ndarray | None:
    for attr in node.attribute:
        if attr.name == "value":
            return numpy_helper.to_array(attr.t)
        if attr.name in ("value_float", "value_floats", "value_int", "value_ints"):
            return np.asarray(onnx.helper.get_attribute_value(attr))
    return None  # sparse tensors and strings are no BN statistics or weights
