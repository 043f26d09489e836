"""Values a graph computes from constants alone, evaluated with ONNX's numpy reference runtime.

The dynamo exporter with ``optimize=False`` writes a bias-less Conv's zero bias as
``Expand(CastLike(0, x), Shape(weight))``: a constant in all but form. Such a value can take a
folded bias only once it is known, so its small subgraph is evaluated here, once. A `CastLike`
reads only the element type of its second input, which may be run-time data; that type comes from
shape inference. Anything random, from another domain, holding a subgraph, or larger than
`MAX_NODES` is not evaluated (the value stays "computed at run time").
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import onnx
from onnx import helper, numpy_helper

MAX_NODES = 32
_RANDOM = {"RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Multinomial"}
_DEFAULT_DOMAINS = ("", "ai.onnx")
_SUBGRAPH = (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)


class Graph(Protocol):
    """What the evaluation needs to know of a graph (`GraphIndex` has it)."""

    producer: dict[str, onnx.NodeProto]
    position: dict[str, int]
    elem_types: dict[str, int]
    opset: int

    def stored(self, name: str) -> np.ndarray | None: ...


def evaluate(graph: Graph, name: str) -> np.ndarray | None:
    """The value of ``name`` when only constants feed it, else None."""
    nodes = _ancestors(graph, name)
    if not nodes:
        return None
    nodes.sort(key=lambda node: graph.position[node.output[0]])
    written = {output for node in nodes for output in node.output}
    reads = {value for node in nodes for value in _reads(node)} - written
    initializers = [numpy_helper.from_array(graph.stored(value), value) for value in sorted(reads)]
    body = helper.make_graph(
        [_dtype_only(node, graph.elem_types) for node in nodes],
        "constant",
        [],
        [helper.make_empty_tensor_value_info(name)],
        initializers,
    )
    model = helper.make_model(body, opset_imports=[helper.make_opsetid("", graph.opset)])
    from onnx.reference import ReferenceEvaluator  # numpy only; loaded when first needed

    try:
        return np.asarray(ReferenceEvaluator(model).run(None, {})[0])
    except Exception:  # an op the reference runtime lacks: the value stays unknown
        return None


def _ancestors(graph: Graph, name: str) -> list[onnx.NodeProto] | None:
    """The nodes that compute ``name`` from constants stored in the file; None when a run-time
    value, an unsupported node, or too many nodes are on the way."""
    nodes: dict[str, onnx.NodeProto] = {}
    pending, seen = [name], set()
    while pending:
        value = pending.pop()
        if value in seen:
            continue
        seen.add(value)
        node = graph.producer.get(value)
        if node is None:
            if graph.stored(value) is None:
                return None
            continue
        unsupported = (
            node.domain not in _DEFAULT_DOMAINS
            or node.op_type in _RANDOM
            or any(a.type in _SUBGRAPH for a in node.attribute)
            or (node.op_type == "CastLike" and node.input[1] not in graph.elem_types)
        )
        if unsupported or len(nodes) >= MAX_NODES:
            return None
        nodes[node.output[0]] = node
        pending.extend(_reads(node))
    return list(nodes.values())


def _reads(node: onnx.NodeProto) -> list[str]:
    """The values a node needs the contents of: a CastLike needs only its second input's type."""
    inputs = node.input[:1] if node.op_type == "CastLike" else node.input
    return [value for value in inputs if value]


def _dtype_only(node: onnx.NodeProto, elem_types: dict[str, int]) -> onnx.NodeProto:
    """`CastLike(x, like)` as `Cast(x, to=type of like)`: the evaluated graph has no ``like``."""
    if node.op_type != "CastLike":
        return node
    to = elem_types[node.input[1]]
    return helper.make_node("Cast", [node.input[0]], list(node.output), to=to)
