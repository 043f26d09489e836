"""Read and rewrite the parts of an ONNX file that adaptation touches, without the `onnx` package.

The serving install has no `onnx`, so, as `core.onnx_opset` and `core.shift.prune` do, we parse
the file with a small schema built at import time (ONNX's own field numbers, in a private pool):
the graph's nodes, initializers, inputs and outputs, and the model's metadata. Every other field
is kept as protobuf's unknown fields and written back byte for byte.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

from foldserve.core.proto_schema import FIELD as _FIELD
from foldserve.core.proto_schema import message_classes

_PACKAGE = "foldserve_onnx_adapt"
_REPEATED, _OPTIONAL = _FIELD.LABEL_REPEATED, _FIELD.LABEL_OPTIONAL
_TEXT, _BYTES, _MESSAGE = _FIELD.TYPE_STRING, _FIELD.TYPE_BYTES, _FIELD.TYPE_MESSAGE
_INT32, _INT64, _FLOAT, _DOUBLE = (
    _FIELD.TYPE_INT32,
    _FIELD.TYPE_INT64,
    _FIELD.TYPE_FLOAT,
    _FIELD.TYPE_DOUBLE,
)
# message -> its fields we read: (name, number, label, type, message type). ONNX's numbers.
_SCHEMA = {
    "Entry": [("key", 1, _OPTIONAL, _TEXT, None), ("value", 2, _OPTIONAL, _TEXT, None)],
    "Attribute": [
        ("name", 1, _OPTIONAL, _TEXT, None),
        ("f", 2, _OPTIONAL, _FLOAT, None),
        ("i", 3, _OPTIONAL, _INT64, None),
    ],
    "Node": [
        ("input", 1, _REPEATED, _TEXT, None),
        ("output", 2, _REPEATED, _TEXT, None),
        ("name", 3, _OPTIONAL, _TEXT, None),
        ("op_type", 4, _OPTIONAL, _TEXT, None),
        ("attribute", 5, _REPEATED, _MESSAGE, "Attribute"),
        ("domain", 7, _OPTIONAL, _TEXT, None),
    ],
    "Tensor": [
        ("dims", 1, _REPEATED, _INT64, None),
        ("data_type", 2, _OPTIONAL, _INT32, None),
        ("float_data", 4, _REPEATED, _FLOAT, None),
        ("name", 8, _OPTIONAL, _TEXT, None),
        ("raw_data", 9, _OPTIONAL, _BYTES, None),
        ("double_data", 10, _REPEATED, _DOUBLE, None),
        ("data_location", 14, _OPTIONAL, _INT32, None),
    ],
    "TensorType": [("elem_type", 1, _OPTIONAL, _INT32, None)],
    "Type": [("tensor_type", 1, _OPTIONAL, _MESSAGE, "TensorType")],
    "ValueInfo": [("name", 1, _OPTIONAL, _TEXT, None), ("type", 2, _OPTIONAL, _MESSAGE, "Type")],
    "Graph": [
        ("node", 1, _REPEATED, _MESSAGE, "Node"),
        ("initializer", 5, _REPEATED, _MESSAGE, "Tensor"),
        ("input", 11, _REPEATED, _MESSAGE, "ValueInfo"),
        ("output", 12, _REPEATED, _MESSAGE, "ValueInfo"),
    ],
    "Model": [
        ("graph", 7, _OPTIONAL, _MESSAGE, "Graph"),
        ("metadata_props", 14, _REPEATED, _MESSAGE, "Entry"),
    ],
}
# ONNX TensorProto.DataType: the element types whose weights adaptation rewrites.
DTYPES = {1: np.dtype("<f4"), 11: np.dtype("<f8")}
ELEM_TYPES = {dtype: code for code, dtype in DTYPES.items()}


_CLASSES = message_classes(_PACKAGE, _SCHEMA)
_Model, _Node = _CLASSES["Model"], _CLASSES["Node"]


class GraphFileError(ValueError):
    """The file cannot be read or rewritten here; the message names the value or node."""


class OnnxFile:
    """One ONNX model, parsed for rewriting: its nodes, its initializers, its metadata.

    Args:
        data: the file's bytes.

    Raises:
        GraphFileError: the bytes are not an ONNX model.
    """

    def __init__(self, data: bytes) -> None:
        self.model = _Model()
        try:
            self.model.ParseFromString(data)
        except Exception as exc:  # protobuf's DecodeError, whatever its module
            raise GraphFileError(f"not an ONNX model ({exc})") from None
        if not self.model.HasField("graph"):
            raise GraphFileError("not an ONNX model (no graph)")
        self._initializers = {t.name: t for t in self.model.graph.initializer}

    @property
    def nodes(self) -> list:
        return list(self.model.graph.node)

    @property
    def graph_inputs(self) -> list[str]:
        return [v.name for v in self.model.graph.input if v.name not in self._initializers]

    @property
    def graph_outputs(self) -> list[str]:
        return [v.name for v in self.model.graph.output]

    def is_initializer(self, name: str) -> bool:
        return name in self._initializers

    def uses(self, name: str) -> int:
        """How many node inputs (and graph outputs) read `name`."""
        reads = sum(list(node.input).count(name) for node in self.model.graph.node)
        return reads + self.graph_outputs.count(name)

    def initializer(self, name: str) -> np.ndarray:
        """An initializer's value (float32 or float64, a copy).

        Raises:
            GraphFileError: not an initializer, stored outside the file, or not float32/64.
        """
        tensor = self._initializers.get(name)
        if tensor is None:
            raise GraphFileError(f"{name!r} is not an initializer of the graph")
        dtype = DTYPES.get(tensor.data_type)
        if dtype is None or tensor.data_location == 1:
            raise GraphFileError(
                f"initializer {name!r}: only float32 and float64 values stored in the file "
                f"are rewritten (data type {tensor.data_type}, location {tensor.data_location})"
            )
        shape = tuple(tensor.dims)
        if tensor.raw_data:
            return np.frombuffer(tensor.raw_data, dtype).reshape(shape).copy()
        values = tensor.float_data if dtype == np.float32 else tensor.double_data
        return np.array(values, dtype).reshape(shape)

    def set_initializer(self, name: str, value: np.ndarray) -> None:
        """Replace an initializer's value (same name; its element type kept)."""
        tensor = self._initializers[name]
        dtype = DTYPES[tensor.data_type]
        del tensor.dims[:]
        tensor.dims.extend(value.shape)
        del tensor.float_data[:]
        del tensor.double_data[:]
        tensor.raw_data = np.ascontiguousarray(value, dtype).tobytes()

    def add_initializer(self, name: str, value: np.ndarray) -> None:
        tensor = self.model.graph.initializer.add(name=name)
        tensor.data_type = ELEM_TYPES[np.dtype(value.dtype).newbyteorder("<")]
        self._initializers[name] = tensor
        self.set_initializer(name, value)

    def elem_type(self, name: str) -> int:
        """The ONNX element type of an initializer."""
        return int(self._initializers[name].data_type)

    def properties(self) -> dict[str, str]:
        """The model's `metadata_props`."""
        return {entry.key: entry.value for entry in self.model.metadata_props}

    def set_properties(self, properties: Mapping[str, str]) -> None:
        del self.model.metadata_props[:]
        for key, value in properties.items():
            self.model.metadata_props.add(key=key, value=value)

    def add_outputs(self, names: Iterable[str], elem_type: int) -> None:
        """Make values graph outputs (element type `elem_type`, shape left to the runtime)."""
        present = set(self.graph_outputs)
        for name in names:
            if name not in present:
                output = self.model.graph.output.add(name=name)
                output.type.tensor_type.elem_type = elem_type
                present.add(name)

    def set_nodes(self, nodes: list) -> None:
        """Replace the graph's nodes (already in topological order)."""
        copies = []
        for node in nodes:
            duplicate = type(node)()
            duplicate.CopyFrom(node)
            copies.append(duplicate)
        del self.model.graph.node[:]
        self.model.graph.node.extend(copies)

    def new_node(self, op_type: str, inputs: list[str], outputs: list[str], name: str):
        """A node (not yet in the graph: `set_nodes` places it)."""
        node = _Node()
        node.op_type, node.name = op_type, name
        node.input.extend(inputs)
        node.output.extend(outputs)
        return node

    def to_bytes(self) -> bytes:
        return self.model.SerializeToString()

    def copy(self) -> OnnxFile:
        return OnnxFile(self.to_bytes())


def attribute(node, name: str, default: float | int) -> float | int:
    """A node's float or int attribute (`default` when absent)."""
    for entry in node.attribute:
        if entry.name == name:
            return entry.f if isinstance(default, float) else entry.i
    return default


def label(node) -> str:
    """The name a fold report gives a node: its name, or its first output's when it has none."""
    return node.name or node.output[0]
