"""ONNX files foldserve did not train, built with `onnx.helper`: no foldserve metadata at all."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

# V2 datatype -> (ONNX element type, numpy dtype)
ELEMENT_TYPES = {
    "BOOL": (TensorProto.BOOL, np.bool_),
    "INT8": (TensorProto.INT8, np.int8),
    "INT16": (TensorProto.INT16, np.int16),
    "INT32": (TensorProto.INT32, np.int32),
    "INT64": (TensorProto.INT64, np.int64),
    "UINT8": (TensorProto.UINT8, np.uint8),
    "UINT16": (TensorProto.UINT16, np.uint16),
    "UINT32": (TensorProto.UINT32, np.uint32),
    "UINT64": (TensorProto.UINT64, np.uint64),
    "FP16": (TensorProto.FLOAT16, np.float16),
    "FP32": (TensorProto.FLOAT, np.float32),
    "FP64": (TensorProto.DOUBLE, np.float64),
}


def save(path: Path, nodes, inputs, outputs, initializers=(), opset: int = 17) -> Path:
    graph = helper.make_graph(nodes, "foreign_test", inputs, outputs, list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, path)
    return path


def value(name: str, element: int, shape: list) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, element, shape)


def write_masked_model(path: Path) -> Path:
    """x FP32 [N, 4] and mask BOOL [N, 4] -> out = where(mask, x, 0) FP32 [N, 4] and
    count = number of true mask values per row, INT64 [N]."""
    node = helper.make_node
    nodes = [
        node("Where", ["mask", "x", "zero"], ["out"]),
        node("Cast", ["mask"], ["mask64"], to=TensorProto.INT64),
        node("ReduceSum", ["mask64", "axes"], ["count"], keepdims=0),
    ]
    initializers = [
        numpy_helper.from_array(np.zeros((), np.float32), "zero"),
        numpy_helper.from_array(np.array([1], np.int64), "axes"),
    ]
    return save(
        path,
        nodes,
        [value("x", TensorProto.FLOAT, ["N", 4]), value("mask", TensorProto.BOOL, ["N", 4])],
        [value("out", TensorProto.FLOAT, ["N", 4]), value("count", TensorProto.INT64, ["N"])],
        initializers,
    )


def write_sequence_model(path: Path) -> Path:
    """x FP32 [N, L] (L dynamic) -> total = sum over L, FP32 [N]."""
    axes = numpy_helper.from_array(np.array([1], np.int64), "axes")
    return save(
        path,
        [helper.make_node("ReduceSum", ["x", "axes"], ["total"], keepdims=0)],
        [value("x", TensorProto.FLOAT, ["N", "L"])],
        [value("total", TensorProto.FLOAT, ["N"])],
        [axes],
    )


def write_logits_model(
    path: Path, weights: np.ndarray, output: str = "scores", dtype: type = np.float32
) -> Path:
    """features [N, F] -> MatMul -> `output` [N, C], both of `dtype`: classifier-shaped, no
    probabilities output (Predict computes the softmax)."""
    features, classes = weights.shape
    element = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    return save(
        path,
        [helper.make_node("MatMul", ["features", "W"], [output])],
        [value("features", element, ["N", features])],
        [value(output, element, ["N", classes])],
        [numpy_helper.from_array(weights.astype(dtype), "W")],
    )


def write_every_datatype_model(path: Path, names: list[str] | None = None) -> Path:
    """One input `x_<DATATYPE>` [N, 3] per datatype (`names`, default all), each copied to
    output `y_<DATATYPE>`."""
    names = list(ELEMENT_TYPES) if names is None else names
    return save(
        path,
        [helper.make_node("Identity", [f"x_{n}"], [f"y_{n}"]) for n in names],
        [value(f"x_{n}", ELEMENT_TYPES[n][0], ["N", 3]) for n in names],
        [value(f"y_{n}", ELEMENT_TYPES[n][0], ["N", 3]) for n in names],
    )


def write_folded_classifier(path: Path, weights: np.ndarray, mean, var) -> Path:
    """`write_logits_model` with the record `foldserve fold` leaves: a BN over the model input
    (statistics `mean`, `var`) folded into the MatMul."""
    from foldserve import contract
    from foldserve.version import VERSION

    write_logits_model(path, weights)
    model = onnx.load(str(path))
    n = len(mean)
    stats = contract.BNStats(
        "bn_in", "MatMul", contract.FORWARD, tuple(mean), tuple(var), (1.0,) * n, (0.0,) * n,
        1e-5, reads_model_input=True,
    )  # fmt: skip
    properties = contract.fold_properties([stats], contract.FoldReport.of([stats]), VERSION)
    helper.set_model_props(model, properties)
    onnx.save(model, str(path))
    return path
