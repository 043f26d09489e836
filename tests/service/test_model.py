"""Loading and checking model files (service/core/model.py): every check happens at load."""

from __future__ import annotations

import gc
import json
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from foldserve.core.loading import load_model
from foldserve.core.model import ModelError
from foldserve.core.onnx_opset import default_opset
from tests.service.model_files import KEYS, input_bn, metadata, write_tiny_model


def test_loads_metadata(tiny_model_path: Path) -> None:
    model = load_model(tiny_model_path, name="digits")
    assert model.name == "digits"
    assert model.version == "20250101T000000Z"
    assert model.classifier.example_shape == (64,)
    assert model.classifier.example_size == 64
    assert model.class_labels == tuple(f"class_{i}" for i in range(10))
    assert model.opset == 17
    assert len(model.sha256) == 64
    assert model.training.training_metrics["split"]["seed"] == 0


def test_run_returns_logits_and_probabilities(tiny_model_path: Path) -> None:
    model = load_model(tiny_model_path)
    outputs = model.run_classifier(np.ones((3, 64), np.float32))
    logits, probabilities = outputs["logits"], outputs["probabilities"]
    assert logits.shape == probabilities.shape == (3, 10)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)


def test_image_shaped_input(tmp_path: Path) -> None:
    path = write_tiny_model(tmp_path / "cnn.onnx", input_shape=(1, 8, 8))
    model = load_model(path)
    assert model.classifier.example_shape == (1, 8, 8)
    assert model.classifier.example_size == 64


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


def test_no_foldserve_metadata_is_read_from_the_graph(tmp_path: Path) -> None:
    """A file without foldserve metadata is a model foldserve did not train: served from its
    graph (tests/service/test_foreign_model.py has the rest)."""
    model = load_model(write_tiny_model(tmp_path / "plain.onnx", meta={}))
    assert model.training is None and model.classifier is not None
    assert (model.name, model.version) == ("foldserve", "1")
    assert model.class_labels == tuple(str(i) for i in range(10))
    assert model.output_names == ("logits", "probabilities")


def test_missing_key(tmp_path: Path) -> None:
    meta = metadata((64,), [str(i) for i in range(10)])
    del meta[KEYS["class_labels"]]
    with pytest.raises(ModelError, match=r"missing: foldserve\.class_labels"):
        load_model(write_tiny_model(tmp_path / "m.onnx", meta=meta))


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("format", "2", "format '2' is not supported"),
        ("input_shape", "[63]", "running one example of shape"),
        ("input_shape", "not json", "not valid JSON"),
        ("class_labels", json.dumps(["a", "b"]), r"expected \[1, 2\]"),
        ("input_name", "pixels", "no input 'pixels'"),
        ("input_dtype", "float16", "only 'float32'"),
        ("training_metrics", "[]", "must be a JSON dict"),
    ],
)
def test_metadata_that_does_not_fit(tmp_path: Path, key: str, value: str, message: str) -> None:
    meta = metadata((64,), [str(i) for i in range(10)])
    meta[KEYS[key]] = value
    with pytest.raises(ModelError, match=message):
        load_model(write_tiny_model(tmp_path / "m.onnx", meta=meta))


def test_input_bn_statistics_that_do_not_fit_the_input_refuse_to_load(tmp_path: Path) -> None:
    meta = metadata((4,), ["a", "b"], bn_stats=(input_bn([0.0] * 3, [1.0] * 3),))
    path = write_tiny_model(tmp_path / "m.onnx", features=4, classes=2, meta=meta)
    with pytest.raises(
        ModelError,
        match=r"foldserve\.bn_stats\[0\] \(layer '0', over the model input\) has 3 channels, "
        r"but one example has shape \[4\]",
    ):
        load_model(path)


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"layer": "0", "mean": [0.0] * 4, "reads_model_input": True}, "'folded_into' missing"),
        (
            {**input_bn([0.0] * 4, [1.0] * 4).to_json(), "var": [1.0, -1.0, 1.0, 1.0]},
            r"bn_stats\[0\]\.var\[1\]: -1\.0 is not a finite number >= 0",
        ),
        (
            {**input_bn([0.0] * 4, [1.0] * 4).to_json(), "gamma": [1.0]},
            r"bn_stats\[0\]\.gamma: 1 values, expected 4",
        ),
        (
            {**input_bn([0.0] * 4, [1.0] * 4).to_json(), "direction": "sideways"},
            "'sideways' is not one of",
        ),
    ],
)
def test_malformed_bn_statistics_refuse_to_load(tmp_path: Path, entry: dict, message: str) -> None:
    meta = metadata((4,), ["a", "b"])
    meta[KEYS["bn_stats"]] = json.dumps([entry])
    path = write_tiny_model(tmp_path / "m.onnx", features=4, classes=2, meta=meta)
    with pytest.raises(ModelError, match=message):
        load_model(path)


def test_typed_fields(tmp_path: Path) -> None:
    stats = input_bn([0.0, 1.0, 2.0, 3.0], [1.0] * 4)
    meta = metadata((4,), ["a", "b"], bn_stats=(stats,))
    model = load_model(write_tiny_model(tmp_path / "m.onnx", features=4, classes=2, meta=meta))
    assert model.training.input_bn == stats and model.bn_stats == (stats,)
    assert (
        model.classifier.input.name == "input"
        and model.classifier.example_shape == (4,)
        and model.classifier.example_size == 4
    )
    shapes = [(o.name, o.shown_shape) for o in model.outputs]
    assert shapes == [("logits", [-1, 2]), ("probabilities", [-1, 2])]


def test_a_loaded_model_keeps_no_copy_of_its_file(tmp_path: Path) -> None:
    # onnxruntime's Python session keeps the bytes it was built from unless told otherwise: each
    # served version would then hold a second copy of its file for as long as it is served.
    from tests.service.foreign_files import write_logits_model

    weights = np.random.default_rng(0).normal(size=(1024, 2048)).astype(np.float32)
    path = write_logits_model(tmp_path / "model.onnx", weights)
    size = path.stat().st_size
    gc.collect()
    tracemalloc.start()
    try:
        model = load_model(path)
        gc.collect()
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    outputs = model.run({"features": np.ones((1, 1024), np.float32)}, ["scores"])
    assert outputs["scores"].shape == (1, 2048)
    assert held < size / 4, f"Python memory holds {held} bytes after loading a {size}-byte file"
