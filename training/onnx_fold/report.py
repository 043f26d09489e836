"""What a fold of an ONNX file returns and prints: the folded model, the contract's records of
what folded and what was left, the BN counts and the verification."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import onnx

from foldserve.contract import BNStats, FoldReport, LeftLayer


class OnnxFoldError(Exception):
    """The file cannot be folded (not ONNX, fails the checker, will not run) or the folded graph
    does not equal the input; the message names the file and what is wrong. Nothing is written."""


class NothingToFold(OnnxFoldError):
    """The file has no BatchNormalization node."""


@dataclass(frozen=True)
class Verification:
    """How the folded graph compared with the input graph in onnxruntime.

    Attributes:
        max_abs_error: the largest |folded − input| over every output value.
        max_scaled_error: the same, divided by its output's scale (its largest |input| value).
        input_shapes: the shapes of the random inputs, by input name.
    """

    max_abs_error: float
    max_scaled_error: float
    input_shapes: dict[str, tuple[int, ...]]


@dataclass
class FoldResult:
    """A folded model and what happened to each BatchNormalization node.

    Attributes:
        model: the folded model (with the fold recorded in its metadata once written).
        bn_stats: one record per folded BN, in folding order, with its statistics.
        left: the BNs left in the graph, each with the reason.
        bn_before, bn_after: BatchNormalization nodes in the input and in the result.
        verification: None until verified.
        out_path: where it was written, None until then.
    """

    model: onnx.ModelProto
    bn_stats: list[BNStats] = field(default_factory=list)
    left: list[LeftLayer] = field(default_factory=list)
    bn_before: int = 0
    bn_after: int = 0
    verification: Verification | None = None
    out_path: Path | None = None

    @property
    def report(self) -> FoldReport:
        """The fold report as the model file carries it."""
        return FoldReport.of(self.bn_stats, self.left)


def format_report(result: FoldResult, source: str) -> str:
    """The report `foldserve fold` prints: what folded into what, what was left and why, counts,
    the verification and where the file went."""
    folded = f"{len(result.bn_stats)} of {result.bn_before}"
    lines = [f"{source}: folded {folded} BatchNormalization nodes"]
    lines += [f"  {s.layer} -> {s.folded_into} ({s.direction})" for s in result.bn_stats]
    lines += [f"  left {entry.layer}: {entry.reason}" for entry in result.left]
    lines.append(f"BatchNormalization nodes: {result.bn_before} -> {result.bn_after}")
    check = result.verification
    if check is not None:
        shapes = ", ".join(f"{name} {list(shape)}" for name, shape in check.input_shapes.items())
        lines.append(
            f"verified in onnxruntime against the input on random inputs ({shapes}): "
            f"max |folded - input| = {check.max_abs_error:.2e} "
            f"({check.max_scaled_error:.2e} of the output scale)"
        )
    if result.out_path is not None:
        lines.append(f"wrote {result.out_path} (BN statistics and fold report in its metadata)")
    return "\n".join(lines)
