"""Loading and checking model files (service/model.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from service.model import ModelError, load_model
from service.onnx_opset import default_opset
from tests.service.model_files import metadata, write_tiny_model


def test_loads_metadata(tiny_model_path: Path) -> None:
    model = load_model(tiny_model_path, name="digits")
    assert model.name == "digits"
    assert model.version == "20250101T000000Z"
    assert model.input_shape == (64,)
    assert model.num_features == 64
    assert model.class_labels == [f"class_{i}" for i in range(10)]
    assert model.opset == 17
    assert len(model.sha256) == 64
    assert model.training_metrics["split"]["seed"] == 0


def test_run_returns_logits_and_probabilities(tiny_model_path: Path) -> None:
    model = load_model(tiny_model_path)
    logits, probabilities = model.run(np.ones((3, 64), np.float32))
    assert logits.shape == probabilities.shape == (3, 10)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)


def test_image_shaped_input(tmp_path: Path) -> None:
    path = write_tiny_model(tmp_path / "cnn.onnx", input_shape=(1, 8, 8))
    model = load_model(path)
    assert model.input_shape == (1, 8, 8)
    assert model.num_features == 64


def test_default_opset_reads_only_the_header(tiny_model_path: Path) -> None:
    assert default_opset(tiny_model_path.read_bytes()) == 17


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="does not exist"):
        load_model(tmp_path / "nope.onnx")


def test_corrupt_file(tmp_path: Path, tiny_model_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(tiny_model_path.read_bytes()[:100])
    with pytest.raises(ModelError, match="not a loadable ONNX model"):
        load_model(bad)


def test_not_onnx(tmp_path: Path) -> None:
    bad = tmp_path / "text.onnx"
    bad.write_text("hello")
    with pytest.raises(ModelError, match="not a loadable ONNX model"):
        load_model(bad)


def test_no_foldserve_metadata(tmp_path: Path) -> None:
    path = write_tiny_model(tmp_path / "plain.onnx", meta={})
    with pytest.raises(ModelError, match="no foldserve metadata"):
        load_model(path)


def test_missing_key(tmp_path: Path) -> None:
    meta = metadata((64,), [str(i) for i in range(10)])
    del meta["foldserve.class_labels"]
    with pytest.raises(ModelError, match=r"missing: foldserve\.class_labels"):
        load_model(write_tiny_model(tmp_path / "m.onnx", meta=meta))


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("foldserve.format", "2", "format '2' is not supported"),
        ("foldserve.input_shape", "[63]", "running one example of shape"),
        ("foldserve.input_shape", "not json", "not valid JSON"),
        ("foldserve.class_labels", json.dumps(["a", "b"]), r"expected \[1, 2\]"),
        ("foldserve.input_name", "pixels", "no input 'pixels'"),
        ("foldserve.input_dtype", "float16", "only 'float32'"),
        ("foldserve.training_metrics", "[]", "must be a JSON dict"),
    ],
)
def test_metadata_that_does_not_fit(tmp_path: Path, key: str, value: str, message: str) -> None:
    meta = metadata((64,), [str(i) for i in range(10)])
    meta[key] = value
    with pytest.raises(ModelError, match=message):
        load_model(write_tiny_model(tmp_path / "m.onnx", meta=meta))
