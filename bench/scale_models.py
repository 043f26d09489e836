"""The models of the repository-scale benchmark, written at run time (nothing is downloaded).

- Small models: digits-sized MLPs, `x [N, 64] -> Gemm -> Relu -> Gemm -> logits [N, 10]`, FP32,
  each with weights of its own. They are alike in shape on purpose: a call costs the same
  whichever model it names, so load spread over all of them against load on one measures what
  serving many models costs, and nothing else.
- Large models: a model-zoo graph shipped in the `onnx` package's backend tests
  (`onnx/backend/test/data/light/light_<name>.onnx`). Those files keep the architecture but not
  the weights: every large initializer is replaced by `ConstantOfShape(<name>__SHAPE)`. Here each
  is materialized again as an initializer of random data of its declared shape, scaled so that
  activations stay finite (BatchNorm scales and variances positive).

Every model goes in Triton's layout, `ROOT/<name>/1/model.onnx`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

FEATURES, HIDDEN, CLASSES = 64, 64, 10  # 8x8 digits
LIGHT_DIR = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"
SHAPE_SUFFIX = "__SHAPE"
# BatchNormalization's inputs by position: X, scale, B, mean, var.
_BN_SCALE, _BN_MEAN, _BN_VAR = 1, 3, 4


@dataclass(frozen=True)
class ServedModel:
    """A model written to a repository: its name and its one input."""

    name: str
    input_name: str
    shape: tuple[int, ...]  # one request's input shape (FP32), batch included

    def example(self, seed: int = 0) -> np.ndarray:
        """A request's input: digits-like values, 0 to 16."""
        return np.random.default_rng(seed).uniform(0, 16, self.shape).astype(np.float32)


def small_model_name(index: int) -> str:
    return f"mlp_{index:02d}"


def write_small_models(root: Path, count: int, seed: int = 0) -> list[ServedModel]:
    """Write `count` small MLPs to `root` (Triton's layout), each with its own weights."""
    return [_write_small_model(root, index, seed) for index in range(count)]


def _write_small_model(root: Path, index: int, seed: int) -> ServedModel:
    rng = np.random.default_rng([seed, index])
    weights = {
        "W1": rng.normal(0, 1 / np.sqrt(FEATURES), (FEATURES, HIDDEN)),
        "B1": rng.normal(0, 0.1, HIDDEN),
        "W2": rng.normal(0, 1 / np.sqrt(HIDDEN), (HIDDEN, CLASSES)),
        "B2": rng.normal(0, 0.1, CLASSES),
    }
    name = small_model_name(index)
    graph = helper.make_graph(
        [
            helper.make_node("Gemm", ["x", "W1", "B1"], ["h"]),
            helper.make_node("Relu", ["h"], ["a"]),
            helper.make_node("Gemm", ["a", "W2", "B2"], ["logits"]),
        ],
        name,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", FEATURES])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", CLASSES])],
        [numpy_helper.from_array(v.astype(np.float32), k) for k, v in weights.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    _save(model, root / name / "1" / "model.onnx")
    return ServedModel(name, "x", (1, FEATURES))


def light_models() -> list[str]:
    """The model-zoo graphs the installed `onnx` ships (e.g. resnet50, vgg19)."""
    return sorted(p.stem.removeprefix("light_") for p in LIGHT_DIR.glob("light_*.onnx"))


def write_large_model(root: Path, zoo_name: str, seed: int = 0) -> tuple[ServedModel, int]:
    """Materialize `zoo_name` (see `light_models`) into `root/<zoo_name>/1/model.onnx`; return
    the model and the file's size in bytes."""
    model = materialize(onnx.load(str(LIGHT_DIR / f"light_{zoo_name}.onnx")), seed)
    path = root / zoo_name / "1" / "model.onnx"
    _save(model, path)
    (tensor,) = model.graph.input
    dims = tuple(d.dim_value or 1 for d in tensor.type.tensor_type.shape.dim)
    return ServedModel(zoo_name, tensor.name, dims), path.stat().st_size


def materialize(light: onnx.ModelProto, seed: int = 0) -> onnx.ModelProto:
    """The graph of a weightless `light_*` model with random weights of the declared shapes.

    Weights (rank > 1) are normal with variance 1/fan-in; BatchNorm scales and variances are
    uniform in [0.5, 1.5]; other vectors (biases, means) small normals. The shape tensors are
    dropped, so are initializers no node reads, and the graph's inputs are its data inputs only
    (the zoo files list every initializer as an input, as IR version 3 required).
    """
    graph = light.graph
    shapes = {
        t.name: numpy_helper.to_array(t) for t in graph.initializer if t.name.endswith(SHAPE_SUFFIX)
    }
    bn_roles = {
        name: position
        for node in graph.node
        if node.op_type == "BatchNormalization"
        for position, name in enumerate(node.input)
    }
    rng = np.random.default_rng(seed)
    nodes, weights = [], []
    for node in graph.node:
        if node.op_type == "ConstantOfShape" and node.input[0] in shapes:
            shape = tuple(int(d) for d in shapes[node.input[0]])
            values = _random_weight(rng, shape, bn_roles.get(node.output[0]))
            weights.append(numpy_helper.from_array(values, node.output[0]))
        else:
            nodes.append(node)
    read = {name for node in nodes for name in node.input}
    kept = [t for t in graph.initializer if t.name not in shapes and t.name in read] + weights
    constants = {t.name for t in graph.initializer} | {t.name for t in weights}
    inputs = [i for i in graph.input if i.name not in constants]
    materialized = helper.make_graph(nodes, graph.name, inputs, list(graph.output), kept)
    model = helper.make_model(materialized, opset_imports=list(light.opset_import))
    model.ir_version = 7  # the lowest that lets initializers be left out of the inputs
    return model


def _random_weight(rng: np.random.Generator, shape: tuple[int, ...], bn_role: int | None):
    if bn_role in (_BN_SCALE, _BN_VAR):
        return rng.uniform(0.5, 1.5, shape).astype(np.float32)
    if bn_role == _BN_MEAN or len(shape) <= 1:
        return (0.1 * rng.standard_normal(shape)).astype(np.float32)
    fan_in = int(np.prod(shape[1:]))
    return (rng.standard_normal(shape, dtype=np.float32) / np.float32(np.sqrt(fan_in))).astype(
        np.float32
    )


def _save(model: onnx.ModelProto, path: Path) -> None:
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
