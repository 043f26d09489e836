"""Contract-conforming ONNX model files for the service tests, built with `onnx.helper`.

input `input` [N, *shape] float32 -> (Flatten) -> Gemm -> `logits`, Softmax -> `probabilities`,
with metadata written through the model-file contract (`foldserve.contract`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from foldserve import contract
from foldserve.contract import BNStats, ModelMetadata
from foldserve.contract.data import SPLIT_SEED, TEST_FRACTION, VAL_FRACTION

DEFAULT_SPLIT = {"seed": SPLIT_SEED, "val_fraction": VAL_FRACTION, "test_fraction": TEST_FRACTION}
KEYS = contract.KEYS


def input_bn(mean: list[float], var: list[float], eps: float = 0.0) -> BNStats:
    """The record of a folded BN over the raw model input (gamma 1, beta 0)."""
    n = len(mean)
    return BNStats(
        layer="0", folded_into="1", direction=contract.FORWARD, mean=tuple(mean),
        var=tuple(var), gamma=(1.0,) * n, beta=(0.0,) * n, eps=eps, reads_model_input=True,
    )  # fmt: skip


def metadata(
    input_shape: tuple[int, ...],
    class_labels: list[str],
    *,
    version: str = "20250101T000000Z",
    training_metrics: dict[str, Any] | None = None,
    bn_stats: tuple[BNStats, ...] = (),
) -> dict[str, str]:
    """Every metadata key of the contract, with plausible values."""
    metrics = training_metrics or {
        "train_accuracy": 1.0,
        "val_accuracy": 1.0,
        "test_accuracy": 1.0,
        "epochs": 1,
        "train_seconds": 0.1,
        "precise_bn": False,
        "split": DEFAULT_SPLIT,
    }
    return contract.to_properties(
        ModelMetadata(
            model_version=version,
            created="2025-01-01T00:00:00Z",
            dataset="digits",
            arch="mlp",
            input_shape=input_shape,
            class_labels=tuple(class_labels),
            foldserve_version="0.1.0",
            bn_stats=bn_stats,
            training_metrics=metrics,
        )
    )


def linear_model(
    weights: np.ndarray,
    bias: np.ndarray,
    meta: dict[str, str] | None,
    input_shape: tuple[int, ...] | None = None,
) -> onnx.ModelProto:
    """A softmax-regression graph: weights [features, classes], bias [classes]."""
    features, classes = weights.shape
    input_shape = input_shape or (features,)
    nodes = []
    gemm_input = "input"
    if len(input_shape) > 1:
        nodes.append(helper.make_node("Flatten", ["input"], ["flat"], axis=1))
        gemm_input = "flat"
    nodes += [
        helper.make_node("Gemm", [gemm_input, "W", "B"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "foldserve_test",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", *input_shape])],
        [
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", classes]),
            helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", classes]),
        ],
        [
            numpy_helper.from_array(weights.astype(np.float32), "W"),
            numpy_helper.from_array(bias.astype(np.float32), "B"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    if meta:
        helper.set_model_props(model, meta)
    onnx.checker.check_model(model)
    return model


def write_tiny_model(
    path: Path,
    *,
    features: int = 64,
    classes: int = 10,
    input_shape: tuple[int, ...] | None = None,
    meta: dict[str, str] | None = None,
    seed: int = 0,
) -> Path:
    """Write a random linear model with full metadata (or `meta`, when given) to `path`."""
    rng = np.random.default_rng(seed)
    weights = rng.normal(size=(features, classes)).astype(np.float32)
    bias = rng.normal(size=classes).astype(np.float32)
    labels = [f"class_{i}" for i in range(classes)]
    meta = metadata(input_shape or (features,), labels) if meta is None else meta
    onnx.save(linear_model(weights, bias, meta, input_shape), path)
    return path


TAPPED_EXAMPLES = 2000  # the synthetic reference sample of `write_tapped_model`


def tapped_rows(mean: list[float], x: np.ndarray) -> dict[str, np.ndarray]:
    """The row sources of `write_tapped_model`'s graph for inputs `x`, computed in numpy."""
    h = x[:, :3] - np.asarray(mean[:3])
    logits = h @ TAPPED_W2
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    return {
        contract.SOURCE_INPUT: x,
        contract.SOURCE_TAPS: h,
        contract.SOURCE_PROBABILITIES: p / p.sum(axis=1, keepdims=True),
    }


TAPPED_W2 = np.array([[1.0, -1.0], [0.5, 0.5], [-1.0, 1.0]], dtype=np.float32)


def tapped_metadata(mean: list[float], *, arl: float = 1e6, classes: int = 2) -> dict[str, str]:
    """Metadata of `write_tapped_model`'s graph: two folded BNs, the tap and a reference.

    BN "0" read the raw input (reference N(mean, 1)); BN "1" produced the hidden layer
    `h = x[:3] - mean[:3]`, tapped. The reference is fitted on a seeded N(mean, 1) sample: the
    input (2 components and the residual), the tap (2 components), the probabilities (1).
    """
    from foldserve.core.shift.reference import GroupSpec, fit_reference

    features = len(mean)
    stats = (
        BNStats("0", "fc1", contract.FORWARD, tuple(mean), (1.0,) * features,
                (1.0,) * features, (0.0,) * features, 0.0, reads_model_input=True),
        BNStats("1", "fc1", contract.BACKWARD, (0.0,) * 3, (1.0,) * 3, (1.0,) * 3, (0.0,) * 3, 0.0),
    )  # fmt: skip
    taps = (contract.Tap("1", contract.tap_name("1"), contract.BN_OUTPUT, moments=1),)
    x = np.random.default_rng(0).normal(mean, 1.0, (TAPPED_EXAMPLES, features))
    specs = [
        GroupSpec("input", contract.SOURCE_INPUT, 0, features, 2, residual=True),
        GroupSpec("1", contract.SOURCE_TAPS, 0, 3, 2),
        GroupSpec("probabilities", contract.SOURCE_PROBABILITIES, 0, classes, 1),
    ]
    priors = (1.0 / classes,) * classes
    reference = fit_reference(specs, tapped_rows(mean, x), priors, "synthetic", arl=arl)
    labels = tuple(f"class_{i}" for i in range(classes))
    meta = ModelMetadata(
        model_version="20250101T000000Z", created="2025-01-01T00:00:00Z", dataset="synthetic",
        arch="mlp", input_shape=(features,), class_labels=labels, foldserve_version="0.1.0",
        bn_stats=stats, training_metrics={"split": DEFAULT_SPLIT}, taps=taps,
        shift_reference=reference,
    )  # fmt: skip
    return contract.to_properties(meta)


def write_tapped_model(path: Path, mean: list[float], **reference: Any) -> Path:
    """A model with a tap, as export writes them: input [N, F] -> Gemm -> `h` [N, 3] -> Gemm ->
    `logits` [N, 2] (classes equally likely); `tap.1` = h, `taps` = it again."""
    features = len(mean)
    weights1 = np.eye(features, 3, dtype=np.float32)
    bias1 = -np.asarray(mean[:3], dtype=np.float32)
    node = helper.make_node
    nodes = [
        node("Gemm", ["input", "W1", "B1"], ["h"]),
        node("Gemm", ["h", "W2", "B2"], ["logits"]),  # no ReLU: its ties would skew the classes
        node("Softmax", ["logits"], ["probabilities"], axis=1),
        node("Identity", ["h"], ["tap.1"]),
        node("Identity", ["tap.1"], ["taps"]),
    ]
    value = helper.make_tensor_value_info
    graph = helper.make_graph(
        nodes,
        "foldserve_tapped_test",
        [value("input", TensorProto.FLOAT, ["N", features])],
        [
            value("logits", TensorProto.FLOAT, ["N", 2]),
            value("probabilities", TensorProto.FLOAT, ["N", 2]),
            value("tap.1", TensorProto.FLOAT, ["N", 3]),
            value("taps", TensorProto.FLOAT, ["N", 3]),
        ],
        [
            numpy_helper.from_array(weights1, "W1"),
            numpy_helper.from_array(bias1, "B1"),
            numpy_helper.from_array(TAPPED_W2, "W2"),
            numpy_helper.from_array(np.zeros(2, np.float32), "B2"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    helper.set_model_props(model, tapped_metadata(mean, **reference))
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path
