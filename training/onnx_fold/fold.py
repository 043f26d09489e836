"""The fold of an ONNX file: load and check it, fold every BN that folds exactly, verify the result
against the input in onnxruntime, record the fold in the metadata, write it.

Backward is preferred over forward, as in the torch fold; the pass repeats until nothing more
folds, because one fold can open another (Gemm → BN → BN).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from pathlib import Path

import onnx
from google.protobuf.message import DecodeError

from foldserve import contract
from foldserve.contract import ContractError, LeftLayer
from foldserve.training.defaults import ONNX_FOLD_SEED
from foldserve.training.onnx_fold import rules
from foldserve.training.onnx_fold.graph import (
    GraphIndex,
    count_batch_norms,
    infer_types,
    label,
    subgraph_batch_norms,
)
from foldserve.training.onnx_fold.report import FoldResult, NothingToFold, OnnxFoldError
from foldserve.training.onnx_fold.rewrite import apply
from foldserve.training.onnx_fold.verify import verify
from foldserve.version import VERSION


def fold_model(model: onnx.ModelProto) -> FoldResult:
    """Fold every inference-mode BatchNormalization of ``model`` that folds exactly, in a copy.

    Returns:
        The folded copy (not yet verified, metadata untouched) and what happened to each BN.
    """
    folded = onnx.ModelProto()
    folded.CopyFrom(model)
    types = infer_types(folded)
    result = FoldResult(folded, bn_before=count_batch_norms(model.graph))
    while True:
        index = GraphIndex(folded, types)
        # One fold at a time: it rewires the graph, so the index is rebuilt before the next.
        step = next(
            ((bn, plan) for bn in index.bn_nodes() if isinstance(plan := _plan(index, bn), tuple)),
            None,
        )
        if step is None:
            break
        bn, (params, plan) = step
        result.bn_stats.append(apply(folded, index, bn, params, plan))
    index = GraphIndex(folded, types)
    result.left = [LeftLayer(label(bn), _plan(index, bn)) for bn in index.bn_nodes()]
    result.left += [
        LeftLayer(label(bn), f"inside a subgraph of {owner!r}: only the main graph is folded")
        for bn, owner in subgraph_batch_norms(folded.graph)
    ]
    result.bn_after = count_batch_norms(folded.graph)
    return result


def _plan(index: GraphIndex, bn: onnx.NodeProto) -> tuple[rules.BNParams, rules.Plan] | str:
    """How ``bn`` folds (backward first), or the reason it does not."""
    params = rules.bn_params(index, bn)
    if isinstance(params, str):
        return params
    backward = rules.backward_plan(index, bn, params)
    if isinstance(backward, rules.Plan):
        return params, backward
    forward = rules.forward_plan(index, bn, params)
    if isinstance(forward, rules.Plan):
        return params, forward
    return f"backward: {backward}; forward: {forward}"


def fold_file(
    source: str | os.PathLike[str],
    target: str | os.PathLike[str],
    *,
    copy_if_nothing_to_fold: bool = False,
    shapes: Mapping[str, tuple[int, ...]] | None = None,
    seed: int = ONNX_FOLD_SEED,
) -> FoldResult:
    """Fold ``source`` into ``target``: load, check, fold, verify, record, write.

    Args:
        source: an ONNX file.
        target: where the folded file goes; written only once verified.
        copy_if_nothing_to_fold: for a file without BatchNormalization, copy it to ``target``
            instead of raising `NothingToFold`.
        shapes: input name -> shape of the random verification inputs, for symbolic dimensions.
        seed: seed of those inputs.

    Raises:
        NothingToFold: no BatchNormalization node (and no copy asked for).
        OnnxFoldError: not an ONNX file, fails the checker, does not run in onnxruntime, or the
            folded graph differs from it; nothing is written.
    """
    source, target = Path(source), Path(target)
    model = load_checked(source)
    if not count_batch_norms(model.graph):
        if not copy_if_nothing_to_fold:
            raise NothingToFold(
                f"{source} has no BatchNormalization node: nothing to fold, nothing written "
                "(--copy-if-nothing-to-fold writes a copy)"
            )
        shutil.copyfile(source, target)
        return FoldResult(model, out_path=target)
    result = fold_model(model)
    try:
        onnx.checker.check_model(result.model)
    except onnx.checker.ValidationError as exc:  # a bug of ours, never the user's file
        raise OnnxFoldError(
            f"the folded graph fails the ONNX checker: {_first_line(exc)}"
        ) from None
    result.verification = verify(model, result.model, shapes=shapes, seed=seed)
    _record(result, source)
    _write(result.model, target)
    result.out_path = target
    return result


def load_checked(path: Path) -> onnx.ModelProto:
    """Read an ONNX file and run the ONNX checker on it.

    Raises:
        OnnxFoldError: missing, empty or not ONNX, or it fails the checker.
    """
    if not path.is_file():
        raise OnnxFoldError(f"{path} does not exist or is not a file")
    try:
        model = onnx.load(str(path))
    except (DecodeError, ValueError, OSError, RuntimeError) as exc:
        raise OnnxFoldError(f"{path} is not an ONNX model: {_first_line(exc)}") from None
    # A protobuf parser accepts many byte strings; an ONNX model has at least a graph and an IR.
    if not model.ir_version or not model.HasField("graph"):
        raise OnnxFoldError(f"{path} is not an ONNX model (no IR version or no graph)")
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        raise OnnxFoldError(f"{path} fails the ONNX checker: {_first_line(exc)}") from None
    return model


def _record(result: FoldResult, source: Path) -> None:
    """Add the fold to the model's metadata, after any fold recorded there before."""
    properties = {p.key: p.value for p in result.model.metadata_props}
    try:
        earlier = contract.read_fold_properties(properties)
    except ContractError as exc:
        raise OnnxFoldError(f"{source}: its fold metadata is broken: {exc}") from None
    stats = [*(earlier[0] if earlier else ()), *result.bn_stats]
    report = contract.FoldReport(
        (*(earlier[1].folded if earlier else ()), *result.report.folded), tuple(result.left)
    )
    properties.update(contract.fold_properties(stats, report, VERSION))
    onnx.helper.set_model_props(result.model, properties)


def _write(model: onnx.ModelProto, target: Path) -> None:
    # Written beside its name and moved there whole: a failed write leaves no half a model.
    staging = target.with_name(f"{target.name}.partial")
    try:
        onnx.save(model, str(staging))
        os.replace(staging, target)
    finally:
        staging.unlink(missing_ok=True)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
