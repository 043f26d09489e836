"""ONNX files with string tensors, built with `onnx.helper` (no foldserve metadata)."""

from __future__ import annotations

from pathlib import Path

import onnx
from onnx import TensorProto, helper

from tests.service.foreign_files import value

# What `write_words_model`'s LabelEncoder maps each word to (any other word: -1).
CODES = {"cat": 1, "dog": 2, "bird": 3}


def write_words_model(path: Path) -> Path:
    """text STRING [N] -> loud = text + "!", STRING [N] (StringConcat), and code = CODES[text]
    (else -1), INT64 [N] (ai.onnx.ml LabelEncoder)."""
    nodes = [
        helper.make_node("StringConcat", ["text", "bang"], ["loud"]),
        helper.make_node(
            "LabelEncoder", ["text"], ["code"], domain="ai.onnx.ml",
            keys_strings=list(CODES), values_int64s=list(CODES.values()), default_int64=-1,
        ),
    ]  # fmt: skip
    graph = helper.make_graph(
        nodes,
        "words",
        [value("text", TensorProto.STRING, ["N"])],
        [value("loud", TensorProto.STRING, ["N"]), value("code", TensorProto.INT64, ["N"])],
        [helper.make_tensor("bang", TensorProto.STRING, [], [b"!"])],
    )
    opsets = [helper.make_opsetid("", 20), helper.make_opsetid("ai.onnx.ml", 3)]
    return _save(path, helper.make_model(graph, opset_imports=opsets))


def write_string_grid_model(path: Path) -> Path:
    """grid STRING [N, 2] -> same = grid (Identity), STRING [N, 2]."""
    graph = helper.make_graph(
        [helper.make_node("Identity", ["grid"], ["same"])],
        "grid",
        [value("grid", TensorProto.STRING, ["N", 2])],
        [value("same", TensorProto.STRING, ["N", 2])],
    )
    return _save(path, helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))


def _save(path: Path, model: onnx.ModelProto) -> Path:
    model.ir_version = 9
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, path)
    return path
