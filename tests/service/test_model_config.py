"""config.json beside a model file: name, version and class labels; bad ones refused at load, and
in a repository a bad version refused while the old one keeps serving."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import grpc
import numpy as np
import pytest

from foldserve._proto.foldserve.v1 import predictor_pb2 as pb
from foldserve._proto.foldserve.v1 import predictor_pb2_grpc as pb_grpc
from foldserve.core.loading import load_model
from foldserve.core.model import ModelError
from foldserve.server.config import add_serve_arguments, resolve
from tests.service.conftest import ServeFactory
from tests.service.foreign_files import write_logits_model, write_masked_model
from tests.service.model_files import write_tiny_model

WEIGHTS = np.random.default_rng(2).normal(size=(5, 3)).astype(np.float32)
LABELS = ["cat", "dog", "bird"]


def write_config(folder: Path, **values: object) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(values))
    return folder / "config.json"


def test_a_config_names_versions_and_labels_a_foreign_model(tmp_path: Path) -> None:
    write_config(tmp_path, name="animals", version="7", class_labels=LABELS)
    model = load_model(write_logits_model(tmp_path / "model.onnx", WEIGHTS))
    assert (model.name, model.version, model.class_labels) == ("animals", "7", tuple(LABELS))
    assert load_model(tmp_path / "model.onnx", name="other").name == "other"


def resolved_name(model: Path, *argv: str, environ: dict | None = None) -> str:
    parser = argparse.ArgumentParser()
    add_serve_arguments(parser, {})
    return resolve(parser.parse_args(["--model", str(model), *argv]), environ or {}).model_name


def test_the_served_name_flag_then_variable_then_config_then_default(tmp_path: Path) -> None:
    path = write_logits_model(tmp_path / "model.onnx", WEIGHTS)
    assert resolved_name(path) == "foldserve"
    write_config(tmp_path, name="animals")
    assert resolved_name(path) == resolved_name(tmp_path) == "animals"
    assert resolved_name(path, "--model-name", "mine") == "mine"
    assert resolved_name(path, environ={"FOLDSERVE_MODEL_NAME": "env"}) == "env"


def test_predict_answers_with_the_config_labels(tmp_path: Path, serve: ServeFactory) -> None:
    write_config(tmp_path, class_labels=LABELS)
    served = serve(write_logits_model(tmp_path / "model.onnx", WEIGHTS))
    features = [1.0, 0.0, -1.0, 2.0, 0.5]
    reply = pb_grpc.PredictorStub(served.channel).Predict(pb.PredictRequest(features=features))
    expected = int((np.array(features, np.float32) @ WEIGHTS).argmax())
    assert (reply.label, reply.class_name) == (expected, LABELS[expected])


BAD_CONFIGS = [
    ("unknown key", '{"labels": ["a"]}', "unknown key 'labels'"),
    ("not json", "{", "not valid JSON"),
    ("not an object", "[]", "expected a JSON object, got list"),
    ("name type", '{"name": 3}', "name: expected a non-empty string, got 3"),
    ("version type", '{"version": ["1"]}', "version: expected a non-empty string"),
    ("labels type", '{"class_labels": [1, 2, 3]}', "class_labels: expected a non-empty list"),
    ("label count", '{"class_labels": ["a", "b"]}',
     "class_labels: 2 labels, but output 'scores' has 3 classes"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("text", "message"), [c[1:] for c in BAD_CONFIGS], ids=[c[0] for c in BAD_CONFIGS]
)
def test_a_bad_config_is_refused_at_load(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "config.json").write_text(text)
    with pytest.raises(ModelError, match="config") as caught:
        load_model(write_logits_model(tmp_path / "model.onnx", WEIGHTS))
    assert message in str(caught.value)


def test_labels_for_a_model_that_is_not_a_classifier_are_refused(tmp_path: Path) -> None:
    write_config(tmp_path, class_labels=["a"])
    with pytest.raises(ModelError, match=r"class_labels: the model is not classifier-shaped"):
        load_model(write_masked_model(tmp_path / "model.onnx"))


def test_a_foldserve_model_takes_name_and_version_but_keeps_its_labels(tmp_path: Path) -> None:
    labels = [f"class_{i}" for i in range(10)]
    write_config(tmp_path, name="digits", version="9", class_labels=labels)
    model = load_model(write_tiny_model(tmp_path / "model.onnx"))
    assert (model.name, model.version, model.class_labels) == ("digits", "9", tuple(labels))
    write_config(tmp_path, class_labels=[str(i) for i in range(10)])
    with pytest.raises(ModelError, match=r"config.json class_labels .* differ from the file's"):
        load_model(tmp_path / "model.onnx")


def test_a_repository_shares_its_config_and_a_version_overrides_it(tmp_path: Path) -> None:
    root = tmp_path / "models"
    write_config(root, name="animals", class_labels=LABELS)
    write_logits_model(root / "1" / "model.onnx", WEIGHTS)
    write_config(root / "2", class_labels=["a", "b", "c"])
    write_logits_model(root / "2" / "model.onnx", WEIGHTS)
    assert resolved_name(root) == "animals"
    one = load_model(root / "1" / "model.onnx", version="1")
    two = load_model(root / "2" / "model.onnx", version="2")
    assert (one.class_labels, two.class_labels) == (tuple(LABELS), ("a", "b", "c"))
    for folder, key in ((root / "2", "name"), (root / "2", "version"), (root, "version")):
        write_config(folder, **{key: "x"})
        with pytest.raises(ModelError, match=rf"{key}: not allowed here"):
            load_model(root / "2" / "model.onnx", version="2")
        (folder / "config.json").unlink()


def test_a_version_with_a_bad_config_is_refused_and_the_old_keeps_serving(
    tmp_path: Path, serve: ServeFactory
) -> None:
    root = tmp_path / "models"
    write_logits_model(root / "1" / "model.onnx", WEIGHTS)
    served = serve(root, keep_versions=1, poll_seconds=0)
    write_config(root / "2", class_labels=["too", "few"])
    write_logits_model(root / "2" / "model.onnx", WEIGHTS)
    repository = served.running.repository
    repository.refresh()
    assert [v.version for v in repository.model().versions] == ["1"]
    assert "class_labels: 2 labels" in repository.model().refused[0].reason
    stub = pb_grpc.PredictorStub(served.channel)
    assert stub.Predict(pb.PredictRequest(features=[0.0] * 5)).model_version == "1"
    with pytest.raises(grpc.RpcError) as caught:
        stub.Predict(pb.PredictRequest(features=[0.0] * 5, model_version="2"))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    time.sleep(0.01)
    write_config(root / "2", class_labels=LABELS)  # fixing the config alone loads the version
    repository.refresh()
    assert [v.version for v in repository.model().versions] == ["2"]
    assert repository.model().latest.model.class_labels == tuple(LABELS)
