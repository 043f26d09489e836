"""ONNX graphs with BatchNormalization in them, assembled with `onnx.helper` the way other tools
write them (torch-free), for the `foldserve fold` tests and `bench/onnx_fold.py`.

- `tf2onnx_dense`: Keras Dense layers as tf2onnx writes them, MatMul → Add(bias) →
  BatchNormalization, with an input BN before the first MatMul;
- `tf2onnx_nhwc_conv`: an NHWC Keras CNN: Transpose to NCHW, BN → Conv(VALID), Conv → BN,
  Conv(SAME) → BN, Transpose back;
- `onnx_backend_batchnorm_cases`: the BatchNormalization node cases of the `onnx` package's own
  backend tests (a lone BN with no neighbour).
"""

from __future__ import annotations

import importlib
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 13  # what tf2onnx writes by default


class Builder:
    """Nodes and random initializers of one graph, with fresh names."""

    def __init__(self, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []

    def weight(self, name: str, shape: tuple[int, ...], scale: float = 0.3) -> str:
        value = (self.rng.standard_normal(shape) * scale).astype(np.float32)
        self.initializers.append(numpy_helper.from_array(value, name))
        return name

    def node(self, op: str, inputs: list[str], name: str, **attrs: object) -> str:
        output = f"{name}:0"
        self.nodes.append(helper.make_node(op, inputs, [output], name=name, **attrs))
        return output

    def bn(self, x: str, channels: int, name: str) -> str:
        """An inference-mode BN with random statistics far from the identity."""
        params = [
            self.weight(f"{name}/gamma", (channels,), 1.0),
            self.weight(f"{name}/beta", (channels,), 1.0),
            self.weight(f"{name}/moving_mean", (channels,), 2.0),
        ]
        var = (self.rng.random(channels) * 3 + 0.1).astype(np.float32)
        self.initializers.append(numpy_helper.from_array(var, f"{name}/moving_variance"))
        inputs = [x, *params, f"{name}/moving_variance"]
        return self.node("BatchNormalization", inputs, name, epsilon=1e-3)

    def model(self, inputs: list, outputs: list, name: str, opset: int = OPSET) -> onnx.ModelProto:
        graph = helper.make_graph(self.nodes, name, inputs, outputs, self.initializers)
        model = helper.make_model(
            graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="tf2onnx"
        )
        model.ir_version = 8
        onnx.checker.check_model(model)
        return model


def tensor(name: str, shape: list) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def tf2onnx_dense(features: int = 20, hidden: tuple[int, ...] = (32, 16), classes: int = 5):
    """BN → [MatMul → Add → BN → Relu]* → MatMul → Add → Softmax: 1 + len(hidden) BNs, all fold."""
    b = Builder(1)
    x = b.bn("input", features, "sequential/batch_normalization/FusedBatchNormV3")
    width = features
    for i, size in enumerate((*hidden, classes)):
        prefix = f"sequential/dense_{i}"
        x = b.node("MatMul", [x, b.weight(f"{prefix}/kernel", (width, size))], f"{prefix}/MatMul")
        x = b.node("Add", [x, b.weight(f"{prefix}/bias", (size,))], f"{prefix}/BiasAdd")
        if i < len(hidden):
            x = b.bn(x, size, f"sequential/batch_normalization_{i + 1}/FusedBatchNormV3")
            x = b.node("Relu", [x], f"sequential/dense_{i}/Relu")
        width = size
    b.nodes.append(helper.make_node("Softmax", [x], ["probabilities"], name="Softmax", axis=-1))
    inputs = [tensor("input", ["unk__0", features])]
    return b.model(inputs, [tensor("probabilities", ["unk__0", classes])], "dense")


def tf2onnx_nhwc_conv(size: int = 12, channels: tuple[int, int] = (8, 16)):
    """NHWC in and out, Transposes around the NCHW convs; 3 BNs, all fold."""
    b = Builder(2)
    c1, c2 = channels
    x = b.node("Transpose", ["input_1"], "sequential/conv2d/Conv2D__6", perm=[0, 3, 1, 2])
    x = b.bn(x, 3, "sequential/batch_normalization/FusedBatchNormV3")
    x = b.node(
        "Conv",
        [x, b.weight("sequential/conv2d/kernel", (c1, 3, 3, 3)), b.weight("conv2d/bias", (c1,))],
        "sequential/conv2d/Conv2D",
        auto_pad="VALID",
    )
    x = b.bn(x, c1, "sequential/batch_normalization_1/FusedBatchNormV3")
    x = b.node("Relu", [x], "sequential/conv2d/Relu")
    x = b.node(
        "Conv",
        [x, b.weight("sequential/conv2d_1/kernel", (c2, c1, 3, 3))],
        "sequential/conv2d_1/Conv2D",
        pads=[1, 1, 1, 1],
    )
    x = b.bn(x, c2, "sequential/batch_normalization_2/FusedBatchNormV3")
    x = b.node("Relu", [x], "sequential/conv2d_1/Relu")
    b.nodes.append(
        helper.make_node("Transpose", [x], ["output"], name="Transpose__20", perm=[0, 2, 3, 1])
    )
    out = size - 2
    return b.model(
        [tensor("input_1", ["unk__0", size, size, 3])],
        [tensor("output", ["unk__0", out, out, c2])],
        "nhwc_conv",
    )


def onnx_backend_batchnorm_cases() -> dict[str, onnx.ModelProto]:
    """The `onnx` package's BatchNormalization node test cases (test_batchnorm_*), by name.

    Older wheels ship them as files under onnx/backend/test/data/node/; newer ones (1.23) ship
    only the code that generates them, `onnx.backend.test.case.node.batch_normalization`, whose
    classes register their cases when imported.
    """
    data = Path(onnx.__file__).parent / "backend" / "test" / "data" / "node"
    files = sorted(data.glob("test_batchnorm_*/model.onnx"))
    if files:
        return {path.parent.name: onnx.load(str(path)) for path in files}
    from onnx.backend.test.case import node

    importlib.import_module("onnx.backend.test.case.node.batch_normalization")
    cases = [c for c in node._NodeTestCases if c.name.startswith("test_batchnorm_")]
    if not cases:  # imported earlier in this process, and its registrations consumed
        cases = node.collect_testcases("BatchNormalization")
    return {case.name: case.model for case in cases}


def pytorch_converted_batchnorm_files() -> list[Path]:
    """The backend test data's `pytorch-converted/test_BatchNorm*_eval` models (opset 6)."""
    data = Path(onnx.__file__).parent / "backend" / "test" / "data" / "pytorch-converted"
    return sorted(data.glob("test_BatchNorm*/model.onnx"))
