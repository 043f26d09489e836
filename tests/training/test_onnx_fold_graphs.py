"""`foldserve fold` (`fold_file`) on graphs built the way other tools build them
(`tests/training/fold_cases.py`): BN counts before and after, verification within the bar, the
reasons of what is left, and the fold recorded in the file in the contract's form."""

from __future__ import annotations

import re
from pathlib import Path

import onnx
import pytest
import torch

from foldserve import contract
from foldserve.training.onnx_fold import OnnxFoldError, fold_file
from foldserve.training.onnx_fold.graph import count_batch_norms
from tests.training import torch_graphs
from tests.training.fold_cases import CASES, FoldCase


@pytest.mark.parametrize("case", [c for c in CASES if not c.bench_only], ids=lambda c: c.label)
def test_fold_case(case: FoldCase, tmp_path: Path) -> None:
    if case.source.startswith("torch dynamo"):
        pytest.importorskip("onnxscript")
    source = case.write(tmp_path / "in.onnx")
    target = tmp_path / "out.onnx"
    assert count_batch_norms(onnx.load(str(source)).graph) == case.before
    if case.after is None:
        with pytest.raises(OnnxFoldError, match=re.escape(case.error)):
            fold_file(source, target)
        assert not target.exists() and not list(tmp_path.glob("*.partial"))
        return
    result = fold_file(source, target)
    assert (result.bn_before, result.bn_after) == (case.before, case.after)
    assert result.verification.max_scaled_error < 1e-5
    written = onnx.load(str(target))
    assert count_batch_norms(written.graph) == case.after
    assert len(result.left) == case.after
    assert all(case.left in entry.reason for entry in result.left), result.left
    properties = {p.key: p.value for p in written.metadata_props}
    stats, report = contract.read_fold_properties(properties)
    assert [s.layer for s in stats] == [f.layer for f in report.folded]
    assert len(stats) == case.before - case.after
    assert [x.layer for x in report.left] == [x.layer for x in result.left]


def test_the_digits_mlp_keeps_names_opset_and_graph_interface(tmp_path: Path) -> None:
    case = CASES[0]
    source = case.write(tmp_path / "in.onnx")
    original = onnx.load(str(source))
    result = fold_file(source, tmp_path / "out.onnx")
    folded = onnx.load(str(tmp_path / "out.onnx"))
    assert folded.opset_import == original.opset_import
    assert folded.producer_name == original.producer_name == "pytorch"
    assert [i.name for i in folded.graph.input] == [i.name for i in original.graph.input]
    assert folded.graph.output == original.graph.output
    names = {n.name for n in original.graph.node}
    assert {n.name for n in folded.graph.node} == {
        n for n in names if "BatchNormalization" not in n and "Identity" not in n
    }
    stats = result.bn_stats
    assert [s.direction for s in stats] == ["forward", "backward", "backward"]
    assert [s.reads_model_input for s in stats] == [True, False, False]
    assert stats[0].folded_into == stats[1].folded_into == "/1/Gemm"


def test_legacy_export_keeps_bn_only_when_told_to(tmp_path: Path) -> None:
    """With its defaults (TrainingMode.EVAL, constant folding) the TorchScript exporter fuses
    Conv+BN itself; do_constant_folding=False with TrainingMode.PRESERVE keeps every BN."""
    model = torch_graphs.resnet_block()
    example = torch.randn(1, 3, 16, 16)
    kept = torch_graphs.export(model, example, tmp_path / "kept.onnx", torch_graphs.LEGACY)
    assert count_batch_norms(onnx.load(str(kept)).graph) == 6
    with pytest.warns(DeprecationWarning):  # the legacy exporter announces its end
        torch.onnx.export(model, (example,), str(tmp_path / "default.onnx"), dynamo=False)
    assert count_batch_norms(onnx.load(str(tmp_path / "default.onnx")).graph) == 0
