"""The checks an exported file must pass before it is kept: its logits against the unfolded torch
model, an example alone against the same example in a batch, every tap against the unfolded BN."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from foldserve.contract import INPUT_NAME, LOGITS, ModelMetadata
from foldserve.runtime import ort
from foldserve.training.taps import reference_taps

FOLD_ATOL = FOLD_RTOL = 1e-5
BATCH_ATOL = 1e-6
BATCH_PEERS = 64


class ExportError(RuntimeError):
    """The exported file is not what we promise: BN left in the graph, or outputs that disagree."""


def verify_logits(
    staging: Path, model_path: Path, original: nn.Module, inputs: np.ndarray
) -> tuple[float, float]:
    session = ort.InferenceSession(str(staging), providers=["CPUExecutionProvider"])
    inputs = inputs.astype(np.float32)
    served = session.run([LOGITS], {INPUT_NAME: inputs})[0]
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
        alone = session.run([LOGITS], {INPUT_NAME: peers[index : index + 1]})[0][0]
        batched = session.run([LOGITS], {INPUT_NAME: peers})[0][index]
        max_batch_error = max(max_batch_error, float(np.max(np.abs(alone - batched))))
    if max_batch_error > BATCH_ATOL:
        raise ExportError(
            f"{model_path}: an example's logits alone and inside a batch of {len(peers) - 1} "
            f"others differ by {max_batch_error:.3g} (allowed {BATCH_ATOL})"
        )
    return max_abs_error, max_batch_error


def verify_taps(
    staging: Path,
    model_path: Path,
    original: nn.Module,
    metadata: ModelMetadata,
    inputs: np.ndarray,
) -> float:
    """Every tap against the unfolded network's BN (float32 moments: atol and rtol 1e-5)."""
    taps = metadata.taps
    if not taps:  # onnxruntime would answer an empty list of outputs with all of them
        return 0.0
    session = ort.InferenceSession(str(staging), providers=["CPUExecutionProvider"])
    inputs = inputs.astype(np.float32)
    served = session.run([tap.name for tap in taps], {INPUT_NAME: inputs})
    expected = reference_taps(original, metadata.bn_stats, taps, inputs)
    worst = 0.0
    for tap, value in zip(taps, served, strict=True):
        worst = max(worst, float(np.max(np.abs(value - expected[tap.name]))))
        if not np.allclose(value, expected[tap.name], atol=FOLD_ATOL, rtol=FOLD_RTOL):
            raise ExportError(
                f"{model_path}: tap {tap.name!r} differs from the unfolded torch BN "
                f"{tap.layer!r} by up to {worst:.3g} (allowed: atol {FOLD_ATOL}, rtol {FOLD_RTOL})"
            )
    return worst
