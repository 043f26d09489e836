"""Triton's config.pbtxt in a model's directory: parsed with what foldserve does not apply named
and ignored, checked against each version's graph, its version policy, file name, batch limit,
reshapes and label files applied; a Triton repository serves unedited."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as triton
from onnx import TensorProto, helper, numpy_helper
from prometheus_client import CollectorRegistry
from tritonclient.utils import InferenceServerException

from foldserve._proto.foldserve.v1 import predictor_pb2 as pb
from foldserve._proto.foldserve.v1 import predictor_pb2_grpc as pb_grpc
from foldserve.core.errors import ModelError
from foldserve.core.metrics import Metrics
from foldserve.core.pbtxt import parse_model_config
from foldserve.core.versions import ModelVersions
from tests.service.conftest import Served, ServeFactory
from tests.service.foreign_files import save, value, write_logits_model
from tests.service.test_model_config import resolved_name, write_config
from tests.service.triton_repository import (
    ANIMAL_WEIGHTS,
    ANIMALS,
    ANIMALS_CONFIG,
    DENSENET_CONFIG,
    densenet_weights,
    write_densenet_like,
    write_model_dir,
    write_triton_repository,
)

ANIMALS_TENSORS = """
input [ { name: "features" data_type: TYPE_FP32 dims: [ 5 ] } ]
output [ { name: "scores" data_type: TYPE_FP32 dims: [ 3 ] } ]
"""


def test_what_the_subset_lacks_is_named_and_the_rest_is_parsed() -> None:
    config, ignored = parse_model_config(ANIMALS_CONFIG)
    assert ignored == ("instance_group.gpus", "dynamic_batching", "optimization", "model_warmup")
    assert (config.name, config.backend, config.max_batch_size) == ("animals", "onnxruntime", 8)
    assert list(config.version_policy.specific.versions) == [1, 3]
    assert [(i.name, list(i.dims)) for i in config.input] == [("features", [5])]
    assert config.output[0].label_filename == "labels.txt"
    assert (config.instance_group[0].count, config.instance_group[0].kind) == (4, 1)


def versions_of(folder: Path, keep: int = 2) -> ModelVersions:
    versions = ModelVersions(folder, folder.name, Metrics(CollectorRegistry()), keep=keep)
    versions.start()
    return versions


def animals_dir(root: Path, config: str, labels: list[str] = ANIMALS) -> Path:
    folder = write_model_dir(root, "animals", config, {"labels.txt": labels})
    write_logits_model(folder / "1" / "model.onnx", ANIMAL_WEIGHTS)
    return folder


REFUSED = [
    ("name", 'name: "zoo"', "name 'zoo' is not the model directory's name 'animals'"),
    ("platform", 'platform: "tensorflow_savedmodel"', "platform 'tensorflow_savedmodel': not an "
     "ONNX model"),
    ("backend", 'backend: "python"', "backend 'python': not an ONNX model"),
    ("syntax", "max_batch_size: 8 input [ { name: ", "cannot be read: 1:"),
    ("data_type", 'max_batch_size: 8 input [ { name: "features" data_type: TYPE_FP64 dims: [5] } ]',
     "input 'features': data_type TYPE_FP64, but the graph's is TYPE_FP32"),
    ("dims", 'max_batch_size: 8 input [ { name: "features" data_type: TYPE_FP32 dims: [4] } ]',
     "input 'features': dims [4] do not fit the graph's shape [-1, 5]"),
    ("no batch", 'input [ { name: "features" data_type: TYPE_FP32 dims: [5] } ]',
     "dims [5] do not fit the graph's shape [-1, 5]"),
    ("unknown input", 'input [ { name: "x" data_type: TYPE_FP32 dims: [5] } ]',
     "input(s) ['x'] not in the graph"),
    ("unknown output", 'output [ { name: "probs" data_type: TYPE_FP32 dims: [3] } ]',
     "output(s) ['probs'] not in the graph"),
    ("no label file", 'output [ { name: "scores" label_filename: "nope.txt" } ]',
     "output 'scores': label file cannot be read"),
    ("policy", "version_policy: { latest: { num_versions: 0 } }", "num_versions: expected 1"),
    ("file name", 'default_model_filename: "../model.onnx"', "expected a file name"),
]  # fmt: skip


@pytest.mark.parametrize(("text", "reason"), [c[1:] for c in REFUSED], ids=[c[0] for c in REFUSED])
def test_a_config_that_does_not_apply_refuses_the_model_with_its_reason(
    tmp_path: Path, text: str, reason: str
) -> None:
    with pytest.raises(ModelError) as caught:
        versions_of(animals_dir(tmp_path, text))
    assert reason in str(caught.value)
    assert "config.pbtxt" in str(caught.value)


def test_label_files_must_fit_the_classifier_and_agree_with_config_json(tmp_path: Path) -> None:
    labelled = 'output [ { name: "scores" label_filename: "labels.txt" } ]'
    folder = animals_dir(tmp_path, labelled, labels=["cat", "dog"])
    with pytest.raises(ModelError, match=r"'labels\.txt': 2 labels for 3 classes"):
        versions_of(folder)
    (folder / "labels.txt").write_text("cat\ndog\nbird\n")
    assert versions_of(folder).latest.model.class_labels == tuple(ANIMALS)
    write_config(folder, class_labels=["a", "b", "c"])  # config.json: another list
    with pytest.raises(ModelError, match=r"differ from config\.json class_labels; give one list"):
        versions_of(folder)
    write_config(folder, class_labels=ANIMALS)  # the same list: no conflict
    assert versions_of(folder).latest.model.class_labels == tuple(ANIMALS)


def test_batching_needs_a_dynamic_first_dimension(tmp_path: Path) -> None:
    folder = write_model_dir(tmp_path, "densenet_onnx", "max_batch_size: 4", {})
    write_densenet_like(folder / "1" / "model.onnx")
    with pytest.raises(ModelError, match=r"shape \[1, 3, 4, 4\] has no dynamic first dimension"):
        versions_of(folder)


def test_a_reshape_must_hold_as_many_values(tmp_path: Path) -> None:
    config = DENSENET_CONFIG.replace("dims: [ 3, 4, 4 ]", "dims: [ 3, 4, 5 ]")
    folder = write_model_dir(tmp_path, "densenet_onnx", config, {"densenet_labels.txt": ["a"]})
    write_densenet_like(folder / "1" / "model.onnx")
    with pytest.raises(ModelError, match=r"dims \[3, 4, 5\] and reshape \[1, 3, 4, 4\] hold"):
        versions_of(folder)


@pytest.mark.parametrize(
    ("policy", "loaded"),
    [
        ("", ["3", "2"]),  # none: --keep-versions (2 here)
        ("version_policy: { latest: { num_versions: 1 } }", ["3"]),
        ("version_policy: { all: {} }", ["3", "2", "1"]),
        ("version_policy: { specific: { versions: [ 1, 2, 7 ] } }", ["2", "1"]),
    ],
)
def test_the_version_policy_chooses_the_versions(
    tmp_path: Path, policy: str, loaded: list[str]
) -> None:
    folder = write_model_dir(tmp_path, "animals", policy, {})
    for version in (1, 2, 3):
        write_logits_model(folder / str(version) / "model.onnx", ANIMAL_WEIGHTS)
    assert [v.version for v in versions_of(folder, keep=2).versions] == loaded


def test_default_model_filename_names_the_file_of_each_version(tmp_path: Path) -> None:
    folder = write_model_dir(tmp_path, "animals", 'default_model_filename: "net.onnx"', {})
    write_logits_model(folder / "1" / "net.onnx", ANIMAL_WEIGHTS)
    write_logits_model(folder / "2" / "model.onnx", ANIMAL_WEIGHTS)  # not the file: not a version
    assert [v.version for v in versions_of(folder).versions] == ["1"]


def test_the_served_name_of_a_model_directory(tmp_path: Path) -> None:
    folder = animals_dir(tmp_path, 'name: "animals"')
    assert resolved_name(folder) == "animals"  # config.pbtxt's name, the directory's
    write_config(folder, name="zoo")
    assert resolved_name(folder) == "zoo"  # config.json's name first
    assert resolved_name(folder, "--model-name", "mine") == "mine"


@pytest.fixture
def repository(tmp_path: Path, serve: ServeFactory) -> tuple[Served, Path]:
    root = write_triton_repository(tmp_path / "models")
    return serve(model_repository=str(root), workers=1, poll_seconds=0), root


def http_client(served: Served) -> triton.InferenceServerClient:
    return triton.InferenceServerClient(f"127.0.0.1:{served.running.http_port}")


def test_a_triton_repository_serves_unedited(repository: tuple[Served, Path]) -> None:
    served, root = repository
    index = {(e.name, e.version): e.state for e in served.running.repository.index(False)}
    assert index == {
        ("animals", "3"): "READY",  # specific: [1, 3]
        ("animals", "1"): "READY",
        ("densenet_onnx", "1"): "READY",
        ("masked", "3"): "READY",  # latest 2 of net.onnx
        ("masked", "2"): "READY",
        ("foldserve", "1"): "READY",  # no config.pbtxt
    }
    client = http_client(served)
    image = np.random.default_rng(0).normal(size=(3, 4, 4)).astype(np.float32)
    data = triton.InferInput("data_0", [3, 4, 4], "FP32")
    data.set_data_from_numpy(image)
    scores = client.infer("densenet_onnx", [data]).as_numpy("fc6_1")
    expected = image.reshape(1, 48) @ densenet_weights(root / "densenet_onnx" / "1" / "model.onnx")
    np.testing.assert_allclose(scores, expected.reshape(10), rtol=1e-5)
    metadata = client.get_model_metadata("animals")
    assert metadata["inputs"] == [{"name": "features", "datatype": "FP32", "shape": [-1, 5]}]


def test_predict_answers_with_the_label_file(repository: tuple[Served, Path]) -> None:
    served, _ = repository
    features = [1.0, 0.0, -1.0, 2.0, 0.5]
    stub = pb_grpc.PredictorStub(served.channel)
    reply = stub.Predict(pb.PredictRequest(model_name="animals", features=features), timeout=5)
    expected = int((np.array(features, np.float32) @ (ANIMAL_WEIGHTS * 3)).argmax())
    assert (reply.model_version, reply.class_name) == ("3", ANIMALS[expected])


def batch(name: str, rows: int, width: int, datatype: str = "FP32") -> triton.InferInput:
    tensor = triton.InferInput(name, [rows, width], datatype)
    values = np.ones((rows, width), np.float32 if datatype == "FP32" else np.bool_)
    tensor.set_data_from_numpy(values)
    return tensor


def test_max_batch_size_bounds_every_request(repository: tuple[Served, Path]) -> None:
    client = http_client(repository[0])
    assert client.infer("animals", [batch("features", 8, 5)]).as_numpy("scores").shape == (8, 3)
    with pytest.raises(InferenceServerException) as caught:
        client.infer("animals", [batch("features", 9, 5)])
    assert caught.value.status() == "400"
    assert "input 'features': a batch of 9, over the model's max_batch_size 8" in str(caught.value)
    with pytest.raises(InferenceServerException, match="input 'mask' has a batch of 3, input 'x'"):
        client.infer("masked", [batch("x", 2, 4), batch("mask", 3, 4, "BOOL")])
    answer = client.infer("masked", [batch("x", 2, 4), batch("mask", 2, 4, "BOOL")])
    assert answer.as_numpy("count").tolist() == [4, 4]


def test_what_is_not_applied_is_logged_once_per_model(
    tmp_path: Path, serve: ServeFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="foldserve.core.triton_config")
    folder = animals_dir(tmp_path / "models", ANIMALS_CONFIG)
    served = serve(model_repository=str(folder.parent), workers=1, poll_seconds=0)
    served.running.repository.refresh()
    served.running.repository.refresh()
    warnings = [r.getMessage() for r in caplog.records if "not applied" in r.getMessage()]
    assert len(warnings) == 1
    assert warnings[0].endswith(
        "ignored: instance_group.gpus, dynamic_batching, optimization, model_warmup, instance_group"
    )


def test_a_changed_config_reloads_and_a_bad_one_keeps_the_loaded_versions(
    tmp_path: Path, serve: ServeFactory, caplog: pytest.LogCaptureFixture
) -> None:
    folder = animals_dir(tmp_path / "models", "max_batch_size: 8" + ANIMALS_TENSORS)
    write_logits_model(folder / "2" / "model.onnx", ANIMAL_WEIGHTS)
    served = serve(model_repository=str(folder.parent), workers=1, poll_seconds=0)
    repository = served.running.repository
    assert [v.version for v in repository.model("animals").versions] == ["2", "1"]
    time.sleep(0.01)
    (folder / "config.pbtxt").write_text('name: "zoo"')
    repository.refresh()
    repository.refresh()
    assert [v.version for v in repository.model("animals").versions] == ["2", "1"]
    errors = [r for r in caplog.records if "is not the model directory's name" in r.getMessage()]
    assert len(errors) == 1
    time.sleep(0.01)
    (folder / "config.pbtxt").write_text("version_policy: { specific: { versions: [1] } }")
    repository.refresh()
    loaded = repository.model("animals").versions
    assert [v.version for v in loaded] == ["1"]
    assert loaded[0].model.interface.max_batch_size == 0  # the new config applies


def test_a_refused_model_is_listed_with_its_reason_and_the_others_serve(
    tmp_path: Path, serve: ServeFactory
) -> None:
    root = tmp_path / "models"
    animals_dir(root, "max_batch_size: 8")
    zoo = write_model_dir(root, "zoo", 'name: "animals"', {})
    write_logits_model(zoo / "1" / "model.onnx", ANIMAL_WEIGHTS)
    served = serve(model_repository=str(root), workers=1, poll_seconds=0)
    index = served.running.repository.index(False)
    assert [(e.name, e.version, e.state) for e in index] == [
        ("animals", "1", "READY"),
        ("zoo", "", "UNAVAILABLE"),
    ]
    assert "name 'animals' is not the model directory's name 'zoo'" in index[1].reason


def test_reshapes_keep_the_batch(tmp_path: Path, serve: ServeFactory) -> None:
    """With max_batch_size, a request's [B, *dims] runs as [B, *reshape] and an output of the
    graph's [B, *reshape] is answered as [B, *dims]."""
    config = """
    max_batch_size: 4
    input [ { name: "x" data_type: TYPE_FP32 dims: [ 5 ] reshape { shape: [ 1, 5 ] } } ]
    output [ { name: "y" data_type: TYPE_FP32 dims: [ 5, 1 ] reshape { shape: [ 5 ] } } ]
    """
    folder = write_model_dir(tmp_path / "models", "squeeze", config, {})
    axes = numpy_helper.from_array(np.array([1], np.int64), "axes")
    save(
        folder / "1" / "model.onnx",
        [helper.make_node("ReduceSum", ["x", "axes"], ["y"], keepdims=0)],
        [value("x", TensorProto.FLOAT, ["N", 1, 5])],
        [value("y", TensorProto.FLOAT, ["N", 5])],
        [axes],
    )
    served = serve(model_repository=str(folder.parent), workers=1, poll_seconds=0)
    values = np.arange(10, dtype=np.float32).reshape(2, 5)
    tensor = triton.InferInput("x", [2, 5], "FP32")
    tensor.set_data_from_numpy(values)
    answer = http_client(served).infer("squeeze", [tensor]).as_numpy("y")
    np.testing.assert_array_equal(answer, values.reshape(2, 5, 1))
