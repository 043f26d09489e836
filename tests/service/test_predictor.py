"""foldserve.v1.Predictor over real sockets: Predict, PredictStream, DescribeModel, bad input."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest
from google.protobuf import json_format

from foldserve._proto.foldserve.v1 import predictor_pb2 as pb
from foldserve._proto.foldserve.v1 import predictor_pb2_grpc as pb_grpc
from tests.service.conftest import Served

OUTPUTS = ("logits", "probabilities")

FEATURES = np.linspace(-1, 1, 64, dtype=np.float32)


@pytest.fixture(scope="module")
def stub(shared_server: Served) -> pb_grpc.PredictorStub:
    return pb_grpc.PredictorStub(shared_server.channel)


def expected(served: Served, features: np.ndarray) -> tuple[int, np.ndarray]:
    outputs = served.model.run_classifier(features.reshape(1, 64))
    return int(outputs["logits"][0].argmax()), outputs["probabilities"][0]


def test_predict(stub: pb_grpc.PredictorStub, shared_server: Served) -> None:
    reply = stub.Predict(pb.PredictRequest(features=FEATURES.tolist(), request_id="r-1"), timeout=5)
    label, probabilities = expected(shared_server, FEATURES)
    assert reply.label == label
    assert reply.class_name == f"class_{label}"
    np.testing.assert_array_equal(np.array(reply.probabilities, np.float32), probabilities)
    assert reply.request_id == "r-1"
    assert (reply.model_name, reply.model_version) == ("foldserve", "20250101T000000Z")


def test_predict_with_matching_model_name_and_version(stub: pb_grpc.PredictorStub) -> None:
    request = pb.PredictRequest(
        features=FEATURES.tolist(), model_name="foldserve", model_version="20250101T000000Z"
    )
    assert stub.Predict(request, timeout=5).model_name == "foldserve"


BAD_PREDICTS = [
    ({"features": [0.5] * 63}, grpc.StatusCode.INVALID_ARGUMENT,
     "features: expected 64 float32 values (shape [64]), got 63"),
    ({"features": [0.5] * 65}, grpc.StatusCode.INVALID_ARGUMENT, "features: expected 64"),
    ({}, grpc.StatusCode.INVALID_ARGUMENT, "features: expected 64 float32 values (shape [64]), "
     "got none (empty features)"),
    ({"features": [0.5] * 10 + [float("nan")] + [0.5] * 53}, grpc.StatusCode.INVALID_ARGUMENT,
     "features[10]: nan is not finite"),
    ({"features": [float("inf")] * 64}, grpc.StatusCode.INVALID_ARGUMENT,
     "features[0]: inf is not finite"),
    ({"features": [0.5] * 64, "model_name": "other"}, grpc.StatusCode.NOT_FOUND,
     "model_name: unknown model 'other'"),
    ({"features": [0.5] * 64, "model_version": "v9"}, grpc.StatusCode.NOT_FOUND,
     "model_version: unknown version 'v9'"),
]  # fmt: skip


@pytest.mark.parametrize(("fields", "code", "message"), BAD_PREDICTS)
def test_predict_bad_input(
    stub: pb_grpc.PredictorStub, fields: dict, code: grpc.StatusCode, message: str
) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        stub.Predict(pb.PredictRequest(**fields), timeout=5)
    assert caught.value.code() == code
    assert message in caught.value.details()
    # The server is unharmed: the next call succeeds.
    assert stub.Predict(pb.PredictRequest(features=FEATURES.tolist()), timeout=5).class_name


def test_predict_stream_answers_in_order_and_survives_bad_examples(
    stub: pb_grpc.PredictorStub, shared_server: Served
) -> None:
    rng = np.random.default_rng(1)
    good = [rng.normal(size=64).astype(np.float32) for _ in range(20)]
    requests = [
        pb.PredictRequest(features=f.tolist(), request_id=str(i)) for i, f in enumerate(good)
    ]
    requests.insert(5, pb.PredictRequest(features=[1.0] * 3, request_id="bad-count"))
    requests.insert(
        9, pb.PredictRequest(features=[0.0] * 64, model_name="x", request_id="bad-model")
    )
    replies = list(stub.PredictStream(iter(requests), timeout=10))
    assert [r.request_id for r in replies] == [r.request_id for r in requests]
    errors = {r.request_id: r.error for r in replies if r.WhichOneof("result") == "error"}
    assert errors["bad-count"].status == "INVALID_ARGUMENT"
    assert errors["bad-count"].code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert "features: expected 64 float32 values" in errors["bad-count"].message
    assert errors["bad-model"].status == "NOT_FOUND"
    assert "model_name" in errors["bad-model"].message
    predictions = [r.prediction for r in replies if r.WhichOneof("result") == "prediction"]
    assert len(predictions) == 20
    for features, prediction in zip(good, predictions, strict=True):
        label, probabilities = expected(shared_server, features)
        assert prediction.label == label
        np.testing.assert_array_equal(np.array(prediction.probabilities, np.float32), probabilities)


def test_huge_but_finite_features_are_accepted(stub: pb_grpc.PredictorStub) -> None:
    # Finite at the edge of float32: accepted (and nothing overflows in the checks).
    reply = stub.Predict(pb.PredictRequest(features=[3e38, -3e38] * 32), timeout=5)
    assert reply.class_name


def test_describe_model(stub: pb_grpc.PredictorStub, shared_server: Served) -> None:
    reply = stub.DescribeModel(pb.DescribeModelRequest(), timeout=5)
    model = shared_server.model
    assert (reply.name, reply.version) == ("foldserve", model.version)
    assert list(reply.input_shape) == [64]
    assert (reply.input_name, reply.input_dtype) == ("input", "float32")
    assert tuple(reply.class_labels) == model.class_labels
    assert list(reply.output_names) == ["logits", "probabilities"]
    metrics = json_format.MessageToDict(reply.training_metrics)
    assert metrics["split"] == {"seed": 0, "val_fraction": 0.15, "test_fraction": 0.2}
    assert json_format.MessageToDict(reply.fold_report) == {"folded": [], "left": []}
    assert (reply.sha256, reply.opset) == (model.sha256, 17)
    assert (reply.dataset, reply.arch, reply.foldserve_version) == ("digits", "mlp", "0.1.0")


def test_describe_unknown_model(stub: pb_grpc.PredictorStub) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        stub.DescribeModel(pb.DescribeModelRequest(model_name="nope"), timeout=5)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert "model_name: unknown model 'nope'" in caught.value.details()


def test_oversized_message_is_resource_exhausted(serve, tiny_model) -> None:
    served = serve(tiny_model, max_message_bytes=1024)
    stub = pb_grpc.PredictorStub(served.channel)
    with pytest.raises(grpc.RpcError) as caught:
        stub.Predict(pb.PredictRequest(features=[0.5] * 1000), timeout=5)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "larger than max" in caught.value.details()
    assert stub.Predict(pb.PredictRequest(features=[0.5] * 64), timeout=5).class_name


def test_stream_deadline_is_honoured(stub: pb_grpc.PredictorStub) -> None:
    import queue

    outbox: queue.Queue = queue.Queue()
    replies = stub.PredictStream(iter(outbox.get, None), timeout=0.5)
    outbox.put(pb.PredictRequest(features=FEATURES.tolist(), request_id="in-time"))
    assert next(replies).request_id == "in-time"
    with pytest.raises(grpc.RpcError) as caught:
        next(replies)  # nothing more is sent: the deadline ends the stream
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    outbox.put(None)
    assert stub.Predict(pb.PredictRequest(features=FEATURES.tolist()), timeout=5).class_name


def test_core_skips_compute_after_the_deadline(tiny_model) -> None:

    from prometheus_client import CollectorRegistry

    from foldserve.core.errors import RequestError, Status
    from foldserve.core.metrics import Metrics
    from foldserve.core.runner import ModelRunner

    registry = CollectorRegistry()
    model = tiny_model
    metrics = Metrics(registry).for_version(
        model.name, model.version, sha256=model.sha256, opset=model.opset, foldserve_version="x",
        class_labels=model.class_labels,
    )  # fmt: skip
    runner = ModelRunner(model, metrics)
    batch = FEATURES.reshape(1, 64)
    with pytest.raises(RequestError) as caught:
        runner.run({"input": batch}, OUTPUTS, time.monotonic() - 1e-3)
    assert caught.value.status is Status.DEADLINE_EXCEEDED
    labels = {"model": model.name, "version": model.version}
    assert registry.get_sample_value("foldserve_model_compute_duration_seconds_count", labels) == 0
    assert "logits" in runner.run({"input": batch}, OUTPUTS, time.monotonic() + 5)
    assert runner.run({"input": batch}, OUTPUTS, None)["logits"].shape == (1, 10)


def test_image_shaped_model_takes_flat_features(serve, tmp_path) -> None:
    from foldserve.core.loading import load_model
    from tests.service.model_files import write_tiny_model

    model = load_model(write_tiny_model(tmp_path / "cnn.onnx", input_shape=(1, 8, 8)))
    stub = pb_grpc.PredictorStub(serve(model).channel)
    assert stub.Predict(pb.PredictRequest(features=FEATURES.tolist()), timeout=5).class_name
    with pytest.raises(grpc.RpcError) as caught:
        stub.Predict(pb.PredictRequest(features=[1.0] * 8), timeout=5)
    assert "features: expected 64 float32 values (shape [1, 8, 8]), got 8" in caught.value.details()


def test_over_the_concurrency_limit_is_resource_exhausted_and_counted(serve, tiny_model) -> None:
    import queue

    from grpc_health.v1 import health_pb2, health_pb2_grpc

    served = serve(tiny_model, max_concurrent_rpcs=1)
    stub = pb_grpc.PredictorStub(served.channel)
    outbox: queue.Queue = queue.Queue()
    replies = stub.PredictStream(iter(outbox.get, None), timeout=10)
    outbox.put(pb.PredictRequest(features=FEATURES.tolist(), request_id="holds-the-slot"))
    assert next(replies).request_id == "holds-the-slot"
    with pytest.raises(grpc.RpcError) as caught:
        stub.Predict(pb.PredictRequest(features=FEATURES.tolist()), timeout=5)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "server busy: 1 calls in flight, the limit (--max-concurrent-rpcs)" in (
        caught.value.details()
    )
    assert (
        served.refused("foldserve_requests_total", method="Predict", code="RESOURCE_EXHAUSTED") == 1
    )
    # Health and reflection never compete with predictions for the slots.
    health = health_pb2_grpc.HealthStub(served.channel)
    reply = health.Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    outbox.put(None)
    assert list(replies) == []
    # Our slot frees when the handler returns, not once gRPC has finished sending.
    assert stub.Predict(pb.PredictRequest(features=FEATURES.tolist()), timeout=5).class_name


def _examples(n: int, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).random((n, 64)) * 16).astype(np.float32)


def _in_threads(work, items, threads: int = 16) -> list:
    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(work, items))


CALLS = 64


def test_concurrent_predicts_over_grpc_each_answer_its_own(serve, tiny_model) -> None:
    served = serve(tiny_model)
    stub = pb_grpc.PredictorStub(served.channel)
    x = _examples(CALLS, seed=1)
    replies = _in_threads(
        lambda i: stub.Predict(pb.PredictRequest(features=x[i].tolist(), request_id=str(i))),
        range(CALLS),
        threads=CALLS,
    )
    for i, reply in enumerate(replies):
        alone = tiny_model.run_classifier(x[i : i + 1])["probabilities"][0]
        assert reply.request_id == str(i)
        np.testing.assert_allclose(reply.probabilities, alone, rtol=1e-6, atol=1e-6)
    assert served.sample("foldserve_requests_total", method="Predict", code="OK") == CALLS
    assert served.sample("foldserve_request_duration_seconds_count", method="Predict") == CALLS
    assert served.sample("foldserve_model_compute_duration_seconds_count") == CALLS
