"""Drop graph outputs (and the nodes only they need) from an ONNX file, without the `onnx` package.

onnxruntime runs every node of a graph whatever outputs a call asks for, so a file's tap nodes
would cost every prediction even with the shift monitor off. The server therefore runs a copy
without them: we parse just the graph's nodes (their input and output names) and outputs with a
small schema built at import time, as `onnx_opset` does; every other field is kept as protobuf's
unknown fields and written back byte for byte.
"""

from __future__ import annotations

from collections.abc import Callable

from foldserve.core.proto_schema import FIELD as _FIELD
from foldserve.core.proto_schema import message_classes

_PACKAGE = "foldserve_onnx_graph"


_REPEATED, _OPTIONAL = _FIELD.LABEL_REPEATED, _FIELD.LABEL_OPTIONAL
_TEXT, _MESSAGE = _FIELD.TYPE_STRING, _FIELD.TYPE_MESSAGE
# message -> its fields we read: (name, number, label, type, message type). ONNX's numbers.
_SCHEMA = {
    "Node": [("input", 1, _REPEATED, _TEXT, None), ("output", 2, _REPEATED, _TEXT, None)],
    "ValueInfo": [("name", 1, _OPTIONAL, _TEXT, None)],
    "Graph": [
        ("node", 1, _REPEATED, _MESSAGE, "Node"),
        ("output", 12, _REPEATED, _MESSAGE, "ValueInfo"),
    ],
    "Model": [("graph", 7, _OPTIONAL, _MESSAGE, "Graph")],
}


_Model = message_classes(_PACKAGE, _SCHEMA)["Model"]


def without_outputs(model_bytes: bytes, drop: Callable[[str], bool]) -> bytes:
    """The model with the graph outputs `drop` selects removed, and every node that only they
    needed. Nodes are in topological order (ONNX requires it), so one backward pass finds them.

    Raises:
        google.protobuf.message.DecodeError: the bytes are not a protobuf message.
    """
    model = _Model()
    model.ParseFromString(model_bytes)
    graph = model.graph
    kept_outputs = [output for output in graph.output if not drop(output.name)]
    needed = {output.name for output in kept_outputs}
    kept_nodes = []
    for node in reversed(graph.node):
        if any(name in needed for name in node.output):
            kept_nodes.append(node)
            needed.update(node.input)
    kept_nodes.reverse()
    outputs = [_copy(o) for o in kept_outputs]
    nodes = [_copy(n) for n in kept_nodes]
    del graph.output[:]
    graph.output.extend(outputs)
    del graph.node[:]
    graph.node.extend(nodes)
    return model.SerializeToString()


def _copy(message):
    duplicate = type(message)()
    duplicate.CopyFrom(message)
    return duplicate
