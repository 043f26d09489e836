"""`foldserve fold` as a user runs it: exit codes, the report, clear errors, nothing written on an
error, and no torch anywhere in the process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import onnx
import pytest

from foldserve.cli import main
from foldserve.contract import KEYS
from tests.service.subprocess_server import REPO, env
from tests.training import onnx_graphs


@pytest.fixture
def dense(tmp_path: Path) -> Path:
    path = tmp_path / "dense.onnx"
    model = onnx_graphs.tf2onnx_dense()
    onnx.helper.set_model_props(model, {"author": "someone else"})
    onnx.save(model, str(path))
    return path


def test_fold_prints_the_report_and_never_imports_torch(dense: Path, tmp_path: Path) -> None:
    target = tmp_path / "folded.onnx"
    code = (
        "import sys\n"
        "from foldserve.cli import main\n"
        f"code = main(['fold', {str(dense)!r}, {str(target)!r}])\n"
        "print('torch imported:', 'torch' in sys.modules)\n"
        "sys.exit(code)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, env=env(),
        timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "folded 3 of 3 BatchNormalization nodes" in out
    assert "sequential/batch_normalization/FusedBatchNormV3 -> sequential/dense_0/MatMul " \
        "(forward)" in out  # fmt: skip
    assert "BatchNormalization nodes: 3 -> 0" in out and "verified in onnxruntime" in out
    assert "torch imported: False" in out
    properties = {p.key: p.value for p in onnx.load(str(target)).metadata_props}
    assert properties["author"] == "someone else"  # the file's own metadata is kept
    assert len(json.loads(properties[KEYS["bn_stats"]])) == 3


def _fold(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str, str]:
    code = main(["fold", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "does not exist or is not a file"),
        (b"", "is not an ONNX model (no IR version or no graph)"),
        (b"name,value\n1,2\n", "is not an ONNX model"),
    ],
)
def test_files_that_are_not_onnx(capsys, tmp_path: Path, content: bytes | None, message) -> None:
    source = tmp_path / "model.onnx"
    if content is not None:
        source.write_bytes(content)
    code, _, err = _fold(capsys, str(source), str(tmp_path / "out.onnx"))
    assert code == 2 and message in err and err.startswith("foldserve fold: ")
    assert not (tmp_path / "out.onnx").exists()


def test_a_file_that_fails_the_checker(capsys, tmp_path: Path) -> None:
    model = onnx_graphs.tf2onnx_dense()
    del model.opset_import[:]
    source = tmp_path / "broken.onnx"
    onnx.save(model, str(source))
    code, _, err = _fold(capsys, str(source), str(tmp_path / "out.onnx"))
    assert code == 2 and "fails the ONNX checker" in err
    assert not (tmp_path / "out.onnx").exists()


def test_a_file_without_batchnorm_is_written_only_when_asked(capsys, tmp_path: Path) -> None:
    b = onnx_graphs.Builder()
    y = b.node("Relu", ["x"], "relu")
    source = tmp_path / "plain.onnx"
    onnx.save(b.model([onnx_graphs.tensor("x", [1, 2])], [onnx_graphs.tensor(y, [1, 2])], "g"),
              str(source))  # fmt: skip
    target = tmp_path / "out.onnx"
    code, _, err = _fold(capsys, str(source), str(target))
    assert code == 2 and "has no BatchNormalization node: nothing to fold, nothing written" in err
    assert not target.exists()
    code, out, _ = _fold(capsys, str(source), str(target), "--copy-if-nothing-to-fold")
    assert code == 0 and "copied it to" in out
    assert target.read_bytes() == source.read_bytes()


def test_input_shapes_for_verification(capsys, dense: Path, tmp_path: Path) -> None:
    code, out, _ = _fold(capsys, str(dense), str(tmp_path / "a.onnx"), "--input-shape", "5,20")
    assert code == 0 and "(input [5, 20])" in out
    code, out, _ = _fold(capsys, str(dense), str(tmp_path / "b.onnx"), "--input-shape=input=3,20")
    assert code == 0 and "(input [3, 20])" in out
    code, _, err = _fold(capsys, str(dense), str(tmp_path / "c.onnx"), "--input-shape", "x=3,20")
    assert code == 2 and "shapes given for ['x'], but the inputs are ['input']" in err
    code, _, err = _fold(capsys, str(dense), str(tmp_path / "d.onnx"), "--input-shape", "3,21")
    assert code == 2 and "onnxruntime cannot run the input model" in err
    assert not list(tmp_path.glob("[cd].onnx*"))
    with pytest.raises(SystemExit) as exit_info:
        main(["fold", str(dense), str(tmp_path / "e.onnx"), "--input-shape", "3,x"])
    assert exit_info.value.code == 2


def test_folding_a_folded_file_again_keeps_the_earlier_records(capsys, tmp_path: Path) -> None:
    """A first fold with a BN left, the graph then edited so it folds, folded again."""
    b = onnx_graphs.Builder()
    x = b.node("Gemm", ["x", b.weight("w", (4, 3))], "gemm", transB=1)
    y = b.node("Relu", [b.bn(b.bn(x, 4, "bn1"), 4, "bn2")], "relu")
    model = b.model([onnx_graphs.tensor("x", ["N", 3])], [onnx_graphs.tensor(y, ["N", 4])], "g")
    first, second = tmp_path / "first.onnx", tmp_path / "second.onnx"
    onnx.save(model, str(first))
    assert _fold(capsys, str(first), str(second))[0] == 0
    folded = onnx.load(str(second))
    b2 = onnx_graphs.Builder(5)
    z = b2.bn("x", 3, "bn0")  # a new BN in front, as a later edit might add
    folded.graph.node.insert(0, b2.nodes[0])
    folded.graph.initializer.extend(b2.initializers)
    folded.graph.node[1].input[0] = z
    onnx.save(folded, str(first))
    assert _fold(capsys, str(first), str(second))[0] == 0
    properties = {p.key: p.value for p in onnx.load(str(second)).metadata_props}
    layers = [s["layer"] for s in json.loads(properties[KEYS["bn_stats"]])]
    assert layers == ["bn1", "bn2", "bn0"]
