"""Candidate versions in the server (`--adapt-reservoir`): the reservoir, a candidate built on
request and on a shift alarm, served by version only, shown by the index, DescribeModel and
/metrics, promoted into the repository or discarded; and the refusals."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from sklearn.datasets import load_digits

from foldserve._proto.foldserve.v1 import predictor_pb2 as pb
from foldserve._proto.foldserve.v1 import predictor_pb2_grpc as pb_grpc
from foldserve._proto.inference import grpc_predict_v2_pb2 as v2
from foldserve._proto.inference import grpc_predict_v2_pb2_grpc as v2_grpc
from foldserve.core.adapt.reservoir import Reservoir
from foldserve.server.app import start_server
from foldserve.server.config import ServeConfig
from tests.service.rest_server import RestServer

GREY = 4.0  # a grey background: every pixel +4 (0..16 scale); the served MLP falls to chance
LOAD = "/v2/repository/models/digits/load"


def test_reservoir_keeps_the_latest_examples_in_a_fixed_block() -> None:
    reservoir = Reservoir(100, (64,))
    block = reservoir.nbytes
    examples = np.arange(1_250 * 64, dtype=np.float32).reshape(1_250, 64)
    for example in examples[:1_000]:
        reservoir.add(example[None])
    reservoir.add(examples[1_000:])  # a batch larger than the reservoir
    assert reservoir.nbytes == block == 100 * 64 * 4
    assert len(reservoir) == 100 and reservoir.seen == 1_250
    np.testing.assert_array_equal(reservoir.sample(), examples[-100:])
    reservoir.add(examples[:3])  # wraps around: oldest first still
    wrapped = np.concatenate([examples[-97:], examples[:3]])
    np.testing.assert_array_equal(reservoir.sample(), wrapped)


def test_a_partly_filled_reservoir_gives_what_it_holds_in_order() -> None:
    reservoir = Reservoir(10, (1, 2))
    reservoir.add(np.ones((3, 1, 2), np.float32) * np.arange(3)[:, None, None])
    sample = reservoir.sample()
    assert sample.shape == (3, 1, 2)
    np.testing.assert_array_equal(sample[:, 0, 0], [0, 1, 2])


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    data = load_digits()
    return data.data.astype(np.float32), data.target


@pytest.fixture
def repository(tmp_path: Path, trained_mlp_dir: Path) -> Path:
    """A repository with one model, `digits`, version 1: the trained digits MLP."""
    (tmp_path / "repo" / "digits" / "1").mkdir(parents=True)
    shutil.copy(trained_mlp_dir / "model.onnx", tmp_path / "repo" / "digits" / "1" / "model.onnx")
    return tmp_path / "repo"


@pytest.fixture
def start(repository: Path) -> Iterator[Callable[..., RestServer]]:
    started: list[RestServer] = []

    def begin(**settings) -> RestServer:
        registry = CollectorRegistry()
        config = ServeConfig(
            model_repository=str(repository), host="127.0.0.1", port=0, http_port=0,
            metrics_port=0, poll_seconds=0, **settings,
        )  # fmt: skip
        running = start_server(config, registry, serve_metrics_http=False)
        started.append(RestServer(running, registry))
        return started[-1]

    yield begin
    for server in started:
        server.stop()


def infer(server: RestServer, batch: np.ndarray, version: str = "") -> tuple[int, dict]:
    path = f"/v2/models/digits/versions/{version}/infer" if version else "/v2/models/digits/infer"
    tensor = {"name": "input", "shape": list(batch.shape), "datatype": "FP32"}
    return server.json("POST", path, {"inputs": [{**tensor, "data": batch.ravel().tolist()}]})


def classes(server: RestServer, batch: np.ndarray, version: str = "") -> np.ndarray:
    status, answer = infer(server, batch, version)
    assert status == 200, answer
    logits = next(o for o in answer["outputs"] if o["name"] == "logits")
    return np.asarray(logits["data"]).reshape(len(batch), -1).argmax(1)


def control(server: RestServer, value: object) -> tuple[int, str]:
    body = json.dumps({"parameters": {"candidate": value}}).encode()
    status, _headers, answer = server.request("POST", LOAD, body)
    return status, answer.decode()


def metric(server: RestServer, name: str) -> list[str]:
    text = generate_latest(server.registry).decode()
    return [line for line in text.splitlines() if line.startswith(name + "{")]


def describe(server: RestServer, version: str = "") -> pb.DescribeModelResponse:
    with grpc.insecure_channel(f"127.0.0.1:{server.running.port}") as channel:
        request = pb.DescribeModelRequest(model_name="digits", model_version=version)
        return pb_grpc.PredictorStub(channel).DescribeModel(request, timeout=10)


def test_a_candidate_built_on_request_answers_the_shift_and_serves_by_version_only(
    start, digits, repository: Path
) -> None:
    images, labels = digits
    server = start(adapt_reservoir=300, adapt_on_alarm=False)
    shifted = images + GREY
    for example in shifted[:300]:  # one example per call, as traffic comes
        infer(server, example[None])
    assert control(server, "adapt") == (200, "")

    _status, index = server.json("POST", "/v2/repository/index", {})
    assert [(e["version"], e["state"]) for e in index] == [("1", "READY"), ("2", "READY")]
    assert index[1]["reason"].startswith("candidate, not the default: adapted on 300 recent")
    test, truth = shifted[1_000:1_400], labels[1_000:1_400]
    serving = np.mean(classes(server, test) == truth)
    adapted = np.mean(classes(server, test, "2") == truth)
    assert serving < 0.3 and adapted > 0.9, (serving, adapted)
    assert infer(server, test[:1])[1]["model_version"] == "1"  # still the default

    described = describe(server)
    assert described.version == "1" and described.candidate.version == "2"
    record = described.candidate.adaptation
    assert record.examples == 300 and "server reservoir" in record.data
    assert record.agreement < 0.5 and record.entropy_adapted > record.entropy_source
    assert describe(server, "2").adaptation.examples == 300
    assert metric(server, "foldserve_candidate_examples") == [
        'foldserve_candidate_examples{model="digits",version="2"} 300.0'
    ]
    assert len(metric(server, "foldserve_candidate_agreement_ratio")) == 1
    assert metric(server, "foldserve_adapt_builds_total")[0].endswith(
        'outcome="built",trigger="request"} 1.0'
    )

    assert control(server, "promote") == (200, "")
    assert (repository / "digits" / "2" / "model.onnx").is_file()
    assert infer(server, test[:1])[1]["model_version"] == "2"  # the default now
    assert not describe(server).HasField("candidate")
    assert metric(server, "foldserve_candidate_examples") == []
    assert control(server, "discard")[0] == 400  # no candidate left


def test_a_shift_alarm_builds_one_candidate_from_inputs_after_it(start, digits) -> None:
    images, _labels = digits
    server = start(adapt_reservoir=100, adapt_on_alarm=True, shift_check_every=1)
    for example in images[:100]:
        infer(server, example[None])
    for example in images[100:400] + GREY:
        infer(server, example[None])
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not describe(server).HasField("candidate"):
        time.sleep(0.1)
    candidate = describe(server).candidate
    assert candidate.version == "2", "no candidate 20 s after the alarm"
    # Built from inputs that came after the alarm: every one of them on a grey background.
    assert candidate.adaptation.agreement < 0.5
    time.sleep(1.5)  # the watcher looks every 0.5 s: it must not build again for this alarm
    (built,) = metric(server, "foldserve_adapt_builds_total")
    assert built.endswith('{model="digits",outcome="built",trigger="alarm"} 1.0')
    # 400 inputs went in; the reservoir holds its 100, in its fixed block.
    assert metric(server, "foldserve_adapt_reservoir_examples") == [
        'foldserve_adapt_reservoir_examples{model="digits"} 100.0'
    ]
    assert metric(server, "foldserve_adapt_reservoir_bytes") == [
        f'foldserve_adapt_reservoir_bytes{{model="digits"}} {100 * 64 * 4:.1f}'
    ]


def test_candidate_requests_are_refused_with_the_reason(start) -> None:
    server = start(adapt_reservoir=100, adapt_on_alarm=False)
    status, answer = control(server, "adapt")
    assert status == 400 and "kept 0 input(s); adaptation needs at least 50" in answer
    assert control(server, "promote") == (
        400, '{"error":"parameters.candidate: model \'digits\' has no candidate version"}'
    )  # fmt: skip
    status, answer = control(server, True)
    assert status == 400
    assert "parameters.candidate: expected one of adapt, promote, discard" in answer
    body = json.dumps({"parameters": {"config": "{}"}}).encode()
    status, _headers, answer = server.request("POST", LOAD, body)
    assert status == 400 and b"parameters: ['config'] not implemented by foldserve" in answer
    adapt = json.dumps({"parameters": {"candidate": "adapt"}}).encode()
    assert server.request("POST", "/v2/repository/models/nope/load", adapt)[0] == 404


def test_grpc_model_control_takes_the_candidate_parameter(start, digits) -> None:
    images, _labels = digits
    server = start(adapt_reservoir=60, adapt_on_alarm=False)
    for example in images[:60]:
        infer(server, example[None])
    with grpc.insecure_channel(f"127.0.0.1:{server.running.port}") as channel:
        stub = v2_grpc.GRPCInferenceServiceStub(channel)

        def load(parameter: v2.ModelRepositoryParameter) -> None:
            request = v2.RepositoryModelLoadRequest(
                model_name="digits", parameters={"candidate": parameter}
            )
            stub.RepositoryModelLoad(request, timeout=30)

        load(v2.ModelRepositoryParameter(string_param="adapt"))
        assert stub.ModelReady(v2.ModelReadyRequest(name="digits", version="2")).ready
        with pytest.raises(grpc.RpcError) as refused:
            load(v2.ModelRepositoryParameter(bool_param=True))
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "parameters.candidate" in refused.value.details()
        load(v2.ModelRepositoryParameter(string_param="discard"))
        assert not stub.ModelReady(v2.ModelReadyRequest(name="digits", version="2")).ready


def test_with_the_setting_off_nothing_is_kept_and_adapt_is_refused(start, digits) -> None:
    images, _labels = digits
    server = start()
    for example in images[:100]:
        infer(server, example[None])
    assert all(v.reservoir is None for v in server.running.repository)
    status, answer = control(server, "adapt")
    assert status == 400 and "keeps no inputs (--adapt-reservoir 0)" in answer
    assert metric(server, "foldserve_adapt_reservoir_bytes") == []


def test_a_model_foldserve_did_not_train_gets_a_candidate_with_its_config(tmp_path: Path) -> None:
    """A graph folded by `foldserve fold`, its labels in the model directory's config.json: the
    candidate is adapted from it and served with the same labels."""
    from tests.training.adapt_models import mlp

    (tmp_path / "net" / "1").mkdir(parents=True)
    _path, population = mlp(tmp_path / "net" / "1" / "model.onnx")
    labels = [f"class-{i}" for i in range(5)]
    (tmp_path / "net" / "config.json").write_text(json.dumps({"class_labels": labels}))
    registry = CollectorRegistry()
    config = ServeConfig(
        model_repository=str(tmp_path), host="127.0.0.1", port=0, http_port=0, metrics_port=0,
        poll_seconds=0, adapt_reservoir=100, adapt_on_alarm=False,
    )  # fmt: skip
    server = RestServer(start_server(config, registry, serve_metrics_http=False), registry)
    try:
        for example in population.draw(100, 1) * 2.0 + 1.0:  # an affine shift of every input
            tensor = {"name": "input", "shape": [1, 12], "datatype": "FP32"}
            body = {"inputs": [{**tensor, "data": example.tolist()}]}
            assert server.json("POST", "/v2/models/net/infer", body)[0] == 200
        body = json.dumps({"parameters": {"candidate": "adapt"}}).encode()
        assert server.request("POST", "/v2/repository/models/net/load", body)[0] == 200
        with grpc.insecure_channel(f"127.0.0.1:{server.running.port}") as channel:
            stub = pb_grpc.PredictorStub(channel)
            request = pb.DescribeModelRequest(model_name="net", model_version="2")
            described = stub.DescribeModel(request, timeout=10)
        assert list(described.class_labels) == labels
        assert described.adaptation.examples == 100
    finally:
        server.stop()


def test_thresholds_worked_out_elsewhere_are_taken_as_they_are(monkeypatch) -> None:
    from foldserve.core.shift import cusum

    key = (0.1, 1, 3, 1e4)
    threshold = cusum.lattice_threshold(*key)
    text = cusum.lattice_thresholds_json({key: threshold})
    monkeypatch.setattr(cusum, "_LATTICE", {})
    monkeypatch.setattr(cusum, "_lattice_threshold", lambda *key: pytest.fail("solved again"))
    cusum.remember_lattice_thresholds(cusum.lattice_thresholds_from_json(text))
    assert cusum.lattice_threshold(*key) == threshold
