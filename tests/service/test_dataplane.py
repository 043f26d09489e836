"""The data plane: every protocol reaches the model through the same method, for a model foldserve
trained and for one it did not; the version that answers a call is the one charged for it; the
decode histogram times decoding only."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import grpc
import numpy as np
import pytest

from foldserve._proto.foldserve.v1 import predictor_pb2 as pb
from foldserve._proto.foldserve.v1 import predictor_pb2_grpc as pb_grpc
from foldserve._proto.inference import grpc_predict_v2_pb2 as v2
from foldserve._proto.inference import grpc_predict_v2_pb2_grpc as v2_grpc
from foldserve.core.access import TokenCheck
from foldserve.core.call import Call
from foldserve.core.dataplane import DataPlane
from foldserve.core.errors import RequestError, Status
from foldserve.core.runner import ModelRunner
from foldserve.core.types import InferInput, InferRequest
from tests.service.conftest import ServeFactory
from tests.service.foreign_files import write_logits_model
from tests.service.model_files import write_tiny_model

WEIGHTS = np.arange(15, dtype=np.float32).reshape(5, 3) / 10


def _models(tmp_path: Path) -> dict[str, tuple[Path, int]]:
    """A model foldserve trained (its metadata) and one it did not (a bare graph), by name, with
    the features one example has."""
    for kind in ("trained", "foreign"):
        (tmp_path / kind).mkdir()
    return {
        "trained": (write_tiny_model(tmp_path / "trained" / "model.onnx"), 64),
        "foreign": (write_logits_model(tmp_path / "foreign" / "model.onnx", WEIGHTS), 5),
    }


def _record(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str, bool]]:
    """Every `DataPlane.infer` call as (method, protocol, classify), and every model run."""
    seen: list[tuple[str, str, bool]] = []
    infer, run = DataPlane.infer, ModelRunner.run

    def recorded_infer(self, call, request):
        seen.append((call.method, call.protocol, request.classify))
        return infer(self, call, request)

    def recorded_run(self, feeds, names, deadline):
        seen.append(("run", self.model.name, bool(feeds)))
        return run(self, feeds, names, deadline)

    monkeypatch.setattr(DataPlane, "infer", recorded_infer)
    monkeypatch.setattr(ModelRunner, "run", recorded_run)
    return seen


@pytest.mark.parametrize("kind", ["trained", "foreign"])
def test_every_protocol_reaches_the_model_through_infer(
    tmp_path: Path, serve: ServeFactory, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    path, features = _models(tmp_path)[kind]
    seen = _record(monkeypatch)
    served = serve(path, model_name=kind)
    values = np.linspace(0, 1, features, dtype=np.float32)
    tensor = v2.ModelInferRequest.InferInputTensor(
        name=served.model.inputs[0].name, datatype="FP32", shape=[1, features]
    )
    tensor.contents.fp32_contents.extend(values.tolist())
    v2_grpc.GRPCInferenceServiceStub(served.channel).ModelInfer(
        v2.ModelInferRequest(model_name=kind, inputs=[tensor]), timeout=5
    )
    stub = pb_grpc.PredictorStub(served.channel)
    predicted = stub.Predict(pb.PredictRequest(features=values.tolist()), timeout=5)
    streamed = list(stub.PredictStream(iter([pb.PredictRequest(features=values.tolist())])))
    assert streamed[0].prediction.label == predicted.label
    assert seen == [
        ("ModelInfer", "grpc", False),
        ("run", kind, True),
        ("Predict", "grpc", True),
        ("run", kind, True),
        ("PredictStream", "grpc", True),
        ("run", kind, True),
    ]


def test_the_data_plane_answers_plain_values_without_a_transport(
    tmp_path: Path, serve: ServeFactory
) -> None:
    path, _ = _models(tmp_path)["foreign"]
    plane = serve(path).running.plane
    call = plane.begin(Call("ModelInfer", "test", time.perf_counter()))
    x = np.ones((2, 5), np.float32)
    answer = plane.infer(
        call, InferRequest("foldserve", "", [InferInput("features", x, "FP32", "x")])
    )
    plane.finish(call, None)
    np.testing.assert_allclose(answer.outputs["scores"], x @ WEIGHTS, rtol=1e-6)
    assert (answer.model_name, answer.model_version) == ("foldserve", "1")
    call = plane.begin(Call("ModelInfer", "test", time.perf_counter()))
    bad = InferInput("features", x.astype(np.float64), "FP64", "inputs[0]")
    with pytest.raises(RequestError) as caught:
        plane.infer(call, InferRequest("foldserve", "", [bad]))
    plane.finish(call, caught.value)
    assert caught.value.status is Status.INVALID_ARGUMENT
    assert caught.value.message == "inputs[0].datatype: input 'features' is FP32, got 'FP64'"
    assert plane.gate.inside == 0


def test_the_version_that_answers_is_charged_for_the_call(
    tmp_path: Path, serve: ServeFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A call to the older of two loaded versions counts in that version's in-flight gauge and
    series, not the newest's."""
    for version in ("1", "2"):
        (tmp_path / "repo" / version).mkdir(parents=True)
        write_tiny_model(tmp_path / "repo" / version / "model.onnx")
    served = serve(tmp_path / "repo", keep_versions=2, model_name="m")
    inside, release = threading.Event(), threading.Event()
    run = ModelRunner.run

    def held(self, feeds, names, deadline):
        inside.set()
        release.wait(10)
        return run(self, feeds, names, deadline)

    monkeypatch.setattr(ModelRunner, "run", held)
    stub = pb_grpc.PredictorStub(served.channel)
    request = pb.PredictRequest(features=[0.0] * 64, model_version="1")
    future = stub.Predict.future(request, timeout=10)
    assert inside.wait(10)

    def gauge(version: str) -> float | None:
        labels = {"model": "m", "version": version}
        return served.registry.get_sample_value("foldserve_requests_in_flight", labels)

    assert (gauge("1"), gauge("2")) == (1.0, 0.0)
    release.set()
    assert future.result().model_version == "1"
    assert (gauge("1"), gauge("2")) == (0.0, 0.0)
    count = served.registry.get_sample_value
    labels = {"model": "m", "method": "Predict", "code": "OK"}
    assert count("foldserve_requests_total", {**labels, "version": "1"}) == 1
    assert count("foldserve_requests_total", {**labels, "version": "2"}) == 0


def test_decode_times_decoding_not_the_token_check_or_admission(
    tiny_model_path: Path, serve: ServeFactory, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("secret")
    check = TokenCheck.check

    def slow_check(self, headers) -> None:
        time.sleep(0.05)
        check(self, headers)

    monkeypatch.setattr(TokenCheck, "check", slow_check)
    served = serve(tiny_model_path, auth_token_file=str(token_file))
    stub = pb_grpc.PredictorStub(served.channel)
    metadata = (("authorization", "Bearer secret"),)
    with pytest.raises(grpc.RpcError):
        stub.Predict(pb.PredictRequest(features=[0.0] * 64), timeout=5)
    stub.Predict(pb.PredictRequest(features=[0.0] * 64), metadata=metadata, timeout=5)
    assert served.sample("foldserve_requests_total", method="Predict", code="OK") == 1
    assert served.refused("foldserve_requests_total", method="Predict", code="UNAUTHENTICATED") == 1
    assert served.sample("foldserve_request_decode_duration_seconds_count") == 1
    assert served.sample("foldserve_request_decode_duration_seconds_sum") < 0.04
