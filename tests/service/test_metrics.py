"""Metrics: exact counts on a fresh registry, and the /metrics endpoint parsed over HTTP."""

from __future__ import annotations

import urllib.request

import grpc
import numpy as np
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from foldserve._proto.foldserve.v1 import predictor_pb2 as pb
from foldserve._proto.foldserve.v1 import predictor_pb2_grpc as pb_grpc
from foldserve._proto.inference import grpc_predict_v2_pb2 as v2
from foldserve._proto.inference import grpc_predict_v2_pb2_grpc as v2_grpc
from foldserve.api.calls import method_names
from foldserve.core.metrics import LATENCY_BUCKETS, Metrics, VersionMetrics
from foldserve.server.app import SERVICES
from tests.service.conftest import Served

GOOD = pb.PredictRequest(features=[0.5] * 64)
BAD = pb.PredictRequest(features=[0.5] * 3)


def make_metrics(registry: CollectorRegistry) -> VersionMetrics:
    return Metrics(registry, methods=method_names(SERVICES)).for_version(
        "m", "1", sha256="ab", opset=17, foldserve_version="0.1.0", class_labels=["a", "b", "c"]
    )


def test_names_labels_and_info() -> None:
    registry = CollectorRegistry()
    metrics = make_metrics(registry)
    metrics.method("Predict").record("OK", 0.0002)
    metrics.method("Predict").record("INVALID_ARGUMENT", 0.0001)
    metrics.compute.observe(1e-5)
    metrics.decode.observe(3e-5)
    metrics.count_predictions(np.array([2]))
    metrics.count_predictions(np.array([0, 2, 2]))
    labels = {"model": "m", "version": "1"}
    sample = registry.get_sample_value
    assert sample("foldserve_requests_total", {**labels, "method": "Predict", "code": "OK"}) == 1
    assert (
        sample(
            "foldserve_requests_total", {**labels, "method": "Predict", "code": "INVALID_ARGUMENT"}
        )
        == 1
    )
    assert sample("foldserve_requests_total", {**labels, "method": "ModelInfer", "code": "OK"}) == 0
    assert sample("foldserve_request_duration_seconds_count", {**labels, "method": "Predict"}) == 2
    assert (
        sample(
            "foldserve_request_duration_seconds_bucket",
            {**labels, "method": "Predict", "le": "0.0001"},
        )
        == 1
    )
    assert sample("foldserve_model_compute_duration_seconds_count", labels) == 1
    assert sample("foldserve_request_decode_duration_seconds_count", labels) == 1
    assert sample("foldserve_requests_in_flight", labels) == 0
    info = {**labels, "sha256": "ab", "opset": "17", "foldserve_version": "0.1.0"}
    assert sample("foldserve_model_info", info) == 1
    assert sample("foldserve_predictions_total", {**labels, "class": "c"}) == 3
    assert sample("foldserve_predictions_total", {**labels, "class": "a"}) == 1
    assert sample("foldserve_predictions_total", {**labels, "class": "b"}) == 0
    assert sample("process_cpu_seconds_total") is not None


def test_buckets_resolve_sub_millisecond_latency() -> None:
    below_ms = [b for b in LATENCY_BUCKETS if b < 1e-3]
    assert LATENCY_BUCKETS[0] == 25e-6 and LATENCY_BUCKETS[-1] == 5.0
    assert len(below_ms) >= 8


def test_counts_match_the_calls_made(served: Served) -> None:
    stub = pb_grpc.PredictorStub(served.channel)
    for _ in range(7):
        stub.Predict(GOOD, timeout=5)
    for _ in range(3):
        with pytest.raises(grpc.RpcError):
            stub.Predict(BAD, timeout=5)
    with pytest.raises(grpc.RpcError):
        stub.Predict(pb.PredictRequest(features=[0.5] * 64, model_name="x"), timeout=5)
    stream = [GOOD, BAD, GOOD, GOOD]
    assert len(list(stub.PredictStream(iter(stream), timeout=5))) == 4
    stub.DescribeModel(pb.DescribeModelRequest(), timeout=5)
    v2_stub = v2_grpc.GRPCInferenceServiceStub(served.channel)
    v2_stub.ServerLive(v2.ServerLiveRequest(), timeout=5)
    v2_stub.ServerLive(v2.ServerLiveRequest(), timeout=5)

    def requests(method: str, code: str = "OK") -> float | None:
        return served.sample("foldserve_requests_total", method=method, code=code)

    assert requests("Predict") == 7
    assert requests("Predict", "INVALID_ARGUMENT") == 3
    # Calls that name no served model, and the server's own operations, count under model "".
    assert served.refused("foldserve_requests_total", method="Predict", code="NOT_FOUND") == 1
    assert requests("PredictStream") == 3
    assert requests("PredictStream", "INVALID_ARGUMENT") == 1
    assert requests("DescribeModel") == 1
    assert served.refused("foldserve_requests_total", method="ServerLive", code="OK") == 2
    # A version has series only for the methods that name one (ModelInfer: at zero from load).
    assert requests("ModelInfer") == 0 and requests("ServerLive") is None
    duration = "foldserve_request_duration_seconds_count"
    assert served.sample(duration, method="Predict") == 10
    assert served.sample(duration, method="PredictStream") == 4
    # Compute and decode are observed once per model run: 7 Predict + 3 stream examples.
    assert served.sample("foldserve_model_compute_duration_seconds_count") == 10
    assert served.sample("foldserve_request_decode_duration_seconds_count") == 10
    predicted = sum(
        served.sample("foldserve_predictions_total", **{"class": c}) or 0
        for c in served.model.class_labels
    )
    assert predicted == 10
    assert served.sample("foldserve_requests_in_flight") == 0


def test_metrics_endpoint_over_http(serve, tiny_model) -> None:
    served = serve(tiny_model, metrics_http=True)
    stub = pb_grpc.PredictorStub(served.channel)
    for _ in range(5):
        stub.Predict(GOOD, timeout=5)
    for _ in range(2):
        with pytest.raises(grpc.RpcError):
            stub.Predict(BAD, timeout=5)
    url = f"http://127.0.0.1:{served.running.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    version = tiny_model.version

    def value(family: str, sample_name: str, **labels: str) -> float:
        wanted = {"model": "foldserve", "version": version, **labels}
        matches = [
            s.value for s in families[family].samples
            if s.name == sample_name and s.labels == wanted
        ]  # fmt: skip
        assert len(matches) == 1, (sample_name, wanted)
        return matches[0]

    requests = "foldserve_requests"
    assert value(requests, "foldserve_requests_total", method="Predict", code="OK") == 5
    assert (
        value(requests, "foldserve_requests_total", method="Predict", code="INVALID_ARGUMENT") == 2
    )
    duration = "foldserve_request_duration_seconds"
    assert value(duration, duration + "_count", method="Predict") == 7
    assert value(duration, duration + "_bucket", method="Predict", le="+Inf") == 7
    compute = "foldserve_model_compute_duration_seconds"
    assert value(compute, compute + "_count") == 5
    decode = "foldserve_request_decode_duration_seconds"
    assert value(decode, decode + "_count") == 5
    assert value("foldserve_requests_in_flight", "foldserve_requests_in_flight") == 0
    info = [s for s in families["foldserve_model_info"].samples]
    assert info[0].labels["sha256"] == tiny_model.sha256
    assert info[0].labels["opset"] == "17"
    assert info[0].value == 1
    assert "process_cpu_seconds" in families
    assert "foldserve_predictions" in families
