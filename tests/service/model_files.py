"""Contract-conforming ONNX model files for the service tests, built with `onnx.helper`.

input `input` [N, *shape] float32 -> (Flatten) -> Gemm -> `logits`, Softmax -> `probabilities`,
with metadata written through the model-file contract (`service.contract`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from service import contract
from service.contract import BNStats, ModelMetadata
from service.defaults import SPLIT_SEED, TEST_FRACTION, VAL_FRACTION

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
