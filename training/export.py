"""Export a folded network to ONNX, verify the file against the original, and write its metadata.

The old TorchScript exporter (`dynamo=False`) is used on purpose: it maps our already-folded graph
one to one (Gemm/Conv/Relu/MaxPool), needs no onnxscript, and does no BN folding of its own that
could hide a fold we missed; the zero-BatchNormalization check below is then a real check.
The metadata is written through the model-file contract (`foldserve.contract`).
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

from foldserve import contract
from foldserve.contract import (
    INPUT_NAME,
    LOGITS,
    OUTPUT_NAMES,
    PROBABILITIES,
    TAPS,
    FoldReport,
    ModelMetadata,
    ShiftReference,
    Tap,
)
from foldserve.contract.layout import MODEL_FILE
from foldserve.core.graph import Classifier, TensorSpec
from foldserve.core.shift.calibrate import ReferenceData, ShiftConfig, calibrate
from foldserve.runtime import ort
from foldserve.training.defaults import CARD_FILE
from foldserve.training.export_checks import (
    FOLD_ATOL,
    FOLD_RTOL,
    ExportError,
    verify_logits,
    verify_taps,
)
from foldserve.training.fold import FoldResult, fold_batchnorm
from foldserve.training.taps import WithProbabilities, tapped_module
from foldserve.version import VERSION

__all__ = ["FOLD_ATOL", "FOLD_RTOL", "OPSET", "ExportError", "ExportResult", "ModelInfo"]

OPSET = 17
# Folded vs unfolded outputs (float32) and one example alone vs inside a batch.


@dataclass(frozen=True)
class ModelInfo:
    """What the model file says about itself, beside the graph and the fold."""

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
    fold_report: FoldReport
    max_tap_error: float = 0.0  # onnxruntime taps vs the unfolded torch BNs' moments
    shift_reference: ShiftReference | None = None


def export_model(
    model: nn.Module,
    out_dir: Path,
    info: ModelInfo,
    check_inputs: np.ndarray,
    reference: ReferenceData | None = None,
    shift: ShiftConfig | None = None,
    *,
    allow_batchnorm: bool = False,
) -> ExportResult:
    """Fold `model`'s BatchNorms, export ONNX to `out_dir/model.onnx`, verify it, write card.json.

    Args:
        model: the trained network (switched to eval mode on the CPU, weights untouched).
        out_dir: created if missing.
        info: metadata to embed.
        check_inputs: float32 examples, shaped `(N, *info.input_shape)`, to verify the file on.
        reference: the sample the shift monitor's reference is fitted on (the training and
            validation splits) and held-out examples to check its ARL with (None: the file has
            taps but no reference, and the server runs no monitor for it).
        shift: the reference's stated ARL, components and replay (None: the defaults).
        allow_batchnorm: keep the BNs that cannot fold as BatchNormalization nodes instead of
            failing (`foldserve export --module --allow-unfolded`; never for a trained model).

    Raises:
        ExportError: a BatchNormalization node survived (unless allowed), or outputs or taps
            disagree beyond tolerance.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    model = model.cpu().eval()
    folded = fold_batchnorm(model, example_inputs=(torch.from_numpy(check_inputs[:2]),))
    model_path = out_dir / MODEL_FILE
    # Built beside its final name and moved there only once verified: a failed export must not
    # leave a file that looks servable.
    staging = out_dir / f"{MODEL_FILE}.partial"
    try:
        example = torch.from_numpy(check_inputs[:2].astype(np.float32))
        shift = shift or ShiftConfig()
        metadata = _export_checked(
            folded, info, example, staging, model_path, reference, shift, allow_batchnorm
        )
        max_abs_error, max_batch_error = verify_logits(staging, model_path, model, check_inputs)
        max_tap_error = verify_taps(staging, model_path, model, metadata, check_inputs)
        os.replace(staging, model_path)
    finally:
        staging.unlink(missing_ok=True)
    # Counted again in the file as written, so the result and the card report the file itself.
    bn_nodes = count_batchnorm_nodes(onnx.load(str(model_path)))
    card_path = out_dir / CARD_FILE
    card = _card(metadata, bn_nodes, max_abs_error, max_batch_error)
    card["verification"]["max_abs_error_taps_vs_unfolded_torch"] = max_tap_error
    card_path.write_text(json.dumps(card, indent=2) + "\n")
    return ExportResult(
        model_path,
        card_path,
        bn_nodes,
        max_abs_error,
        max_batch_error,
        folded.report,
        max_tap_error,
        metadata.shift_reference,
    )


def count_batchnorm_nodes(proto: onnx.ModelProto) -> int:
    """BatchNormalization nodes in a model's main graph (a served model must have none)."""
    return sum(node.op_type == "BatchNormalization" for node in proto.graph.node)


def _export_checked(
    folded: FoldResult,
    info: ModelInfo,
    example: torch.Tensor,
    staging: Path,
    model_path: Path,
    reference: ReferenceData | None,
    shift: ShiftConfig,
    allow_batchnorm: bool = False,
) -> ModelMetadata:
    """Export to `staging`, check the graph, fit the shift reference, write the metadata."""
    tapped, taps = tapped_module(folded, example)
    with warnings.catch_warnings():
        # The TorchScript exporter is chosen deliberately (module docstring); its deprecation
        # notice would only repeat that choice on every run.
        warnings.simplefilter("ignore", DeprecationWarning)
        _export_onnx(tapped, example, staging, taps)
    proto = onnx.load(str(staging))
    onnx.checker.check_model(proto, full_check=True)
    bn_nodes = count_batchnorm_nodes(proto)
    if bn_nodes and not allow_batchnorm:
        left = "; ".join(f"{entry.layer!r}: {entry.reason}" for entry in folded.left)
        raise ExportError(
            f"{model_path}: {bn_nodes} BatchNormalization node(s) left in the graph "
            f"(not folded: {left or 'none reported'}); a served model must have none"
        )
    fitted = None
    if reference is not None:
        fitted = _fit_reference(proto, info, folded, taps, reference, shift)
    metadata = _metadata(info, folded, datetime.now(UTC), taps, fitted)
    onnx.helper.set_model_props(proto, contract.to_properties(metadata))
    onnx.save(proto, str(staging))
    return metadata


def _fit_reference(
    proto: onnx.ModelProto,
    info: ModelInfo,
    folded: FoldResult,
    taps: tuple[Tap, ...],
    reference: ReferenceData,
    shift: ShiftConfig,
) -> ShiftReference:
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    spec = next(i for i in session.get_inputs() if i.name == INPUT_NAME)
    shape = tuple(d if isinstance(d, int) else None for d in spec.shape)
    tensor = TensorSpec(INPUT_NAME, np.dtype(np.float32), shape)
    classes = len(info.class_labels)
    classifier = Classifier(tensor, tuple(info.input_shape), LOGITS, PROBABILITIES, classes)
    labels = tuple(info.class_labels)
    return calibrate(session, classifier, tuple(folded.bn_stats), taps, reference, shift, labels)


def _export_onnx(
    tapped: nn.Module, example: torch.Tensor, model_path: Path, taps: tuple[Tap, ...]
) -> None:
    outputs = [*OUTPUT_NAMES, *(tap.name for tap in taps), *([TAPS] if taps else [])]
    torch.onnx.export(
        WithProbabilities(tapped).eval(),
        (example,),
        str(model_path),
        input_names=[INPUT_NAME],
        output_names=outputs,
        dynamic_axes={name: {0: "batch"} for name in (INPUT_NAME, *outputs)},
        opset_version=OPSET,
        dynamo=False,
    )


def _metadata(
    info: ModelInfo,
    folded: FoldResult,
    created: datetime,
    taps: tuple[Tap, ...],
    reference: ShiftReference | None,
) -> ModelMetadata:
    return ModelMetadata(
        model_version=info.model_version or created.strftime("%Y%m%dT%H%M%SZ"),
        created=created.isoformat(timespec="seconds"),
        dataset=info.dataset,
        arch=info.arch,
        input_shape=tuple(info.input_shape),
        class_labels=tuple(info.class_labels),
        foldserve_version=VERSION,
        bn_stats=tuple(folded.bn_stats),
        fold_report=folded.report,
        training_metrics=info.training_metrics,
        taps=taps,
        shift_reference=reference,
    )


def _card(metadata: ModelMetadata, bn_nodes: int, max_abs_error: float, batch_error: float) -> dict:
    metrics = metadata.training_metrics
    report = metadata.fold_report
    return {
        "model": MODEL_FILE,
        "model_version": metadata.model_version,
        "created": metadata.created,
        "foldserve_version": metadata.foldserve_version,
        "dataset": metadata.dataset,
        "arch": metadata.arch,
        "input": {
            "name": metadata.input_name,
            "shape": list(metadata.input_shape),
            "dtype": metadata.input_dtype,
        },
        "outputs": list(metadata.output_names),
        "class_labels": list(metadata.class_labels),
        "test_accuracy": metrics.get("test_accuracy"),
        "val_accuracy": metrics.get("val_accuracy"),
        "batchnorm_nodes": bn_nodes,
        "folded": [f"{f.layer} -> {f.folded_into} ({f.direction})" for f in report.folded],
        "left": report.to_json()["left"],
        "verification": {
            "max_abs_error_vs_unfolded_torch": max_abs_error,
            "max_abs_error_alone_vs_in_batch": batch_error,
        },
    }
