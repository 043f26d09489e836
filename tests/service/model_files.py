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


def tapped_metadata(
    mean: list[float], *, half_life: float = 10.0, threshold: float = 1.0, classes: int = 2
) -> dict[str, str]:
    """Metadata of `write_tapped_model`'s graph: two folded BNs, their taps and a calibration.

    BN "0" read the raw input (reference N(mean, 1)); BN "1" produced the hidden layer
    `h = x[:3] - mean[:3]` (reference N(0, 1)). Every threshold is `threshold`, the prior's 0.3.
    """
    features = len(mean)
    stats = (
        BNStats("0", "fc1", contract.FORWARD, tuple(mean), (1.0,) * features,
                (1.0,) * features, (0.0,) * features, 0.0, reads_model_input=True),
        BNStats("1", "fc1", contract.BACKWARD, (0.0,) * 3, (1.0,) * 3, (1.0,) * 3, (0.0,) * 3, 0.0),
    )  # fmt: skip
    taps = (
        contract.Tap("0", contract.tap_name("0"), contract.BN_INPUT),
        contract.Tap("1", contract.tap_name("1"), contract.BN_OUTPUT),
    )
    layers = tuple(contract.LayerCalibration(t.layer, threshold / 1.5, threshold) for t in taps)
    calibration = contract.ShiftCalibration(
        half_life=half_life, margin=1.5, prior_margin=2.0, replay=1000, data="synthetic",
        min_var_fraction=0.01, var_floor=0.01, layers=layers,
        class_priors=(1.0 / classes,) * classes, prior_clean_max=0.15, prior_threshold=0.3,
    )  # fmt: skip
    labels = tuple(f"class_{i}" for i in range(classes))
    meta = ModelMetadata(
        model_version="20250101T000000Z", created="2025-01-01T00:00:00Z", dataset="synthetic",
        arch="mlp", input_shape=(features,), class_labels=labels, foldserve_version="0.1.0",
        bn_stats=stats, training_metrics={"split": DEFAULT_SPLIT}, taps=taps,
        shift_calibration=calibration,
    )  # fmt: skip
    return contract.to_properties(meta)


def write_tapped_model(path: Path, mean: list[float], **calibration: Any) -> Path:
    """A model with taps, as export writes them: input [N, F] -> Gemm -> `h` [N, 3] -> Gemm ->
    `logits` [N, 2] (classes equally likely); `tap.0` = (x, x²), `tap.1` = (h, h²), `taps` =
    both end to end."""
    features = len(mean)
    weights1 = np.eye(features, 3, dtype=np.float32)
    bias1 = -np.asarray(mean[:3], dtype=np.float32)
    weights2 = np.array([[1.0, -1.0], [0.5, 0.5], [-1.0, 1.0]], dtype=np.float32)
    node = helper.make_node
    nodes = [
        node("Gemm", ["input", "W1", "B1"], ["h"]),
        node("Gemm", ["h", "W2", "B2"], ["logits"]),  # no ReLU: its ties would skew the classes
        node("Softmax", ["logits"], ["probabilities"], axis=1),
    ]
    for tensor, tap in (("input", "tap.0"), ("h", "tap.1")):
        nodes += [
            node("Mul", [tensor, tensor], [f"{tensor}_sq"]),
            node("Concat", [tensor, f"{tensor}_sq"], [tap], axis=1),
        ]
    nodes.append(node("Concat", ["tap.0", "tap.1"], ["taps"], axis=1))
    value = helper.make_tensor_value_info
    graph = helper.make_graph(
        nodes,
        "foldserve_tapped_test",
        [value("input", TensorProto.FLOAT, ["N", features])],
        [
            value("logits", TensorProto.FLOAT, ["N", 2]),
            value("probabilities", TensorProto.FLOAT, ["N", 2]),
            value("tap.0", TensorProto.FLOAT, ["N", 2 * features]),
            value("tap.1", TensorProto.FLOAT, ["N", 6]),
            value("taps", TensorProto.FLOAT, ["N", 2 * features + 6]),
        ],
        [
            numpy_helper.from_array(weights1, "W1"),
            numpy_helper.from_array(bias1, "B1"),
            numpy_helper.from_array(weights2, "W2"),
            numpy_helper.from_array(np.zeros(2, np.float32), "B2"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    helper.set_model_props(model, tapped_metadata(mean, **calibration))
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path
