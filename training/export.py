"""Export a folded network to ONNX, verify the file against the original, and write its metadata.

The old TorchScript exporter (`dynamo=False`) is used on purpose: it maps our already-folded graph
one to one (Gemm/Conv/Relu/MaxPool), needs no onnxscript, and does no BN folding of its own that
could hide a fold we missed; the zero-BatchNormalization check below is then a real check.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

from training.fold import fold_batchnorm

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
import onnxruntime as ort

OPSET = 17
INPUT_NAME = "input"
OUTPUT_NAMES = ("logits", "probabilities")
METADATA_PREFIX = "foldserve."
FORMAT_VERSION = "1"
# Folded vs unfolded outputs (float32) and one example alone vs inside a batch.
FOLD_ATOL = FOLD_RTOL = 1e-5
BATCH_ATOL = 1e-6
BATCH_PEERS = 64


class ExportError(RuntimeError):
    """The exported file is not what we promise: BN left in the graph, or outputs that disagree."""


@dataclass(frozen=True)
class ModelInfo:
    """What the model file says about itself, beside the graph."""

    arch: str
    dataset: str
    input_shape: tuple[int, ...]
    class_labels: list[str]
    training_metrics: dict = field(default_factory=dict)
    model_version: str | None = None


@dataclass(frozen=True)
class ExportResult:
    model_path: Path
    card_path: Path
    bn_nodes: int
    max_abs_error: float  # onnxruntime (folded) vs torch (unfolded, eval)
    max_batch_error: float  # one example alone vs inside a batch of BATCH_PEERS others
    fold_report: dict


class _WithProbabilities(nn.Module):
    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.network(x)
        return logits, torch.softmax(logits, dim=1)


def export_model(
    model: nn.Module, out_dir: Path, info: ModelInfo, check_inputs: np.ndarray
) -> ExportResult:
    """Fold `model`'s BatchNorms, export ONNX to `out_dir/model.onnx`, verify it, write card.json.

    Args:
        model: the trained network (switched to eval mode on the CPU, weights untouched).
        out_dir: created if missing.
        info: metadata to embed.
        check_inputs: float32 examples, shaped `(N, *info.input_shape)`, to verify the file on.

    Raises:
        ExportError: a BatchNormalization node survived, or outputs disagree beyond tolerance.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    model = model.cpu().eval()
    folded = fold_batchnorm(model, example_inputs=(torch.from_numpy(check_inputs[:2]),))
    report = folded.fold_report
    model_path = out_dir / "model.onnx"
    # Built beside its final name and moved there only once verified: a failed export must not
    # leave a file that looks servable.
    staging = out_dir / "model.onnx.partial"
    try:
        max_abs_error, max_batch_error, metadata = _export_verified(
            model, folded, info, check_inputs, staging, model_path
        )
    finally:
        staging.unlink(missing_ok=True)
    # Counted again in the file as written, so the result and the card report the file itself.
    bn_nodes = count_batchnorm_nodes(onnx.load(str(model_path)))
    card_path = out_dir / "card.json"
    card = _card(info, metadata, report.to_dict(), bn_nodes, max_abs_error, max_batch_error)
    card_path.write_text(json.dumps(card, indent=2) + "\n")
    return ExportResult(
        model_path, card_path, bn_nodes, max_abs_error, max_batch_error, report.to_dict()
    )


def count_batchnorm_nodes(proto: onnx.ModelProto) -> int:
    """BatchNormalization nodes in a model's main graph (a served model must have none)."""
    return sum(node.op_type == "BatchNormalization" for node in proto.graph.node)


def _export_verified(
    model: nn.Module,
    folded: nn.Module,
    info: ModelInfo,
    check_inputs: np.ndarray,
    staging: Path,
    model_path: Path,
) -> tuple[float, float, dict[str, str]]:
    report = folded.fold_report
    example = torch.from_numpy(check_inputs[:2].astype(np.float32))
    with warnings.catch_warnings():
        # The TorchScript exporter is chosen deliberately (module docstring); its deprecation
        # notice would only repeat that choice on every run.
        warnings.simplefilter("ignore", DeprecationWarning)
        _export_onnx(folded, example, staging)
    proto = onnx.load(str(staging))
    onnx.checker.check_model(proto, full_check=True)
    bn_nodes = count_batchnorm_nodes(proto)
    if bn_nodes:
        left = [entry["bn"] for entry in report.to_dict()["left"]]
        raise ExportError(
            f"{model_path}: {bn_nodes} BatchNormalization node(s) left in the graph "
            f"(not folded: {left or 'none reported'}); a served model must have none"
        )
    created = datetime.now(UTC)
    metadata = _metadata(info, report, created)
    onnx.helper.set_model_props(proto, metadata)
    onnx.save(proto, str(staging))
    max_abs_error, max_batch_error = _verify(staging, model_path, model, check_inputs)
    os.replace(staging, model_path)
    return max_abs_error, max_batch_error, metadata


def _export_onnx(folded: nn.Module, example: torch.Tensor, model_path: Path) -> None:
    torch.onnx.export(
        _WithProbabilities(folded).eval(),
        (example,),
        str(model_path),
        input_names=[INPUT_NAME],
        output_names=list(OUTPUT_NAMES),
        dynamic_axes={name: {0: "batch"} for name in (INPUT_NAME, *OUTPUT_NAMES)},
        opset_version=OPSET,
        dynamo=False,
    )


def _metadata(info: ModelInfo, report, created: datetime) -> dict[str, str]:
    values = {
        "format": FORMAT_VERSION,
        "version": version("foldserve"),
        "model_version": info.model_version or created.strftime("%Y%m%dT%H%M%SZ"),
        "created": created.isoformat(timespec="seconds"),
        "dataset": info.dataset,
        "arch": info.arch,
        "input_name": INPUT_NAME,
        "input_shape": json.dumps(list(info.input_shape)),
        "input_dtype": "float32",
        "output_names": json.dumps(list(OUTPUT_NAMES)),
        "class_labels": json.dumps(info.class_labels),
        "bn_stats": json.dumps([_bn_stats_entry(entry) for entry in report.bn_stats()]),
        "fold_report": json.dumps(report.to_dict()),
        "training_metrics": json.dumps(info.training_metrics),
    }
    return {METADATA_PREFIX + key: value for key, value in values.items()}


def _bn_stats_entry(folded: dict) -> dict:
    """The documented `foldserve.bn_stats` entry (the fold report calls `layer` and `folded_into`
    `bn` and `into`)."""
    renamed = {"bn": "layer", "into": "folded_into"}
    return {renamed.get(key, key): value for key, value in folded.items()}


def _verify(
    staging: Path, model_path: Path, original: nn.Module, inputs: np.ndarray
) -> tuple[float, float]:
    session = ort.InferenceSession(str(staging), providers=["CPUExecutionProvider"])
    inputs = inputs.astype(np.float32)
    served = session.run([OUTPUT_NAMES[0]], {INPUT_NAME: inputs})[0]
    with torch.no_grad():
        expected = original(torch.from_numpy(inputs)).numpy()
    max_abs_error = float(np.max(np.abs(served - expected)))
    if not np.allclose(served, expected, atol=FOLD_ATOL, rtol=FOLD_RTOL):
        raise ExportError(
            f"{model_path}: onnxruntime logits differ from the unfolded torch model by up to "
            f"{max_abs_error:.3g} (allowed: atol {FOLD_ATOL}, rtol {FOLD_RTOL})"
        )
    max_batch_error = 0.0
    peers = inputs[: BATCH_PEERS + 1]
    for index in range(min(len(peers), 8)):
        alone = session.run([OUTPUT_NAMES[0]], {INPUT_NAME: peers[index : index + 1]})[0][0]
        batched = session.run([OUTPUT_NAMES[0]], {INPUT_NAME: peers})[0][index]
        max_batch_error = max(max_batch_error, float(np.max(np.abs(alone - batched))))
    if max_batch_error > BATCH_ATOL:
        raise ExportError(
            f"{model_path}: an example's logits alone and inside a batch of {len(peers) - 1} "
            f"others differ by {max_batch_error:.3g} (allowed {BATCH_ATOL})"
        )
    return max_abs_error, max_batch_error


def _card(
    info: ModelInfo,
    metadata: dict[str, str],
    fold: dict,
    bn_nodes: int,
    max_abs_error: float,
    batch_error: float,
) -> dict:
    metrics = info.training_metrics
    return {
        "model": "model.onnx",
        "model_version": metadata[METADATA_PREFIX + "model_version"],
        "created": metadata[METADATA_PREFIX + "created"],
        "foldserve_version": metadata[METADATA_PREFIX + "version"],
        "dataset": info.dataset,
        "arch": info.arch,
        "input": {"name": INPUT_NAME, "shape": list(info.input_shape), "dtype": "float32"},
        "outputs": list(OUTPUT_NAMES),
        "class_labels": info.class_labels,
        "test_accuracy": metrics.get("test_accuracy"),
        "val_accuracy": metrics.get("val_accuracy"),
        "batchnorm_nodes": bn_nodes,
        "folded": [
            f"{entry['bn']} -> {entry['into']} ({entry['direction']})" for entry in fold["folded"]
        ],
        "left": fold["left"],
        "verification": {
            "max_abs_error_vs_unfolded_torch": max_abs_error,
            "max_abs_error_alone_vs_in_batch": batch_error,
        },
    }
