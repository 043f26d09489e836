"""V2 REST (`api/rest.py`) over real sockets: every endpoint, and every error status the table
promises, each produced by a request."""

from __future__ import annotations

import http.client
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from foldserve.runtime import ort
from tests.service.rest_server import RestServer, start_rest

BATCH = np.random.default_rng(3).normal(size=(2, 64)).astype(np.float32)
INFER = "/v2/models/foldserve/infer"
TOKEN = "s3cret-token"


@pytest.fixture(scope="module")
def rest(tiny_model_path: Path) -> Iterator[RestServer]:
    server = start_rest(tiny_model_path)
    yield server
    server.stop()


@pytest.fixture
def start(tiny_model_path: Path) -> Iterator[Callable[..., RestServer]]:
    """Start fresh servers of the tiny model (settings as `start_rest`'s); all stop at teardown."""
    started: list[RestServer] = []

    def begin(**settings) -> RestServer:
        started.append(start_rest(tiny_model_path, **settings))
        return started[-1]

    yield begin
    for server in started:
        server.stop()


def infer_body(batch: np.ndarray = BATCH, **fields) -> dict:
    tensor = {"name": "input", "shape": list(batch.shape), "datatype": "FP32"}
    return {"inputs": [{**tensor, "data": batch.tolist()}], **fields}


def expected(path: Path, batch: np.ndarray = BATCH) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, {"input": batch}), strict=True))


def test_server_metadata_live_and_ready(rest: RestServer) -> None:
    status, metadata = rest.json("GET", "/v2")
    assert status == 200
    assert metadata["name"] == "foldserve" and metadata["version"]
    assert "binary_tensor_data" in metadata["extensions"]
    assert rest.json("GET", "/v2/health/live") == (200, {"live": True})
    assert rest.json("GET", "/v2/health/ready") == (200, {"ready": True})


def test_model_metadata_and_ready(rest: RestServer) -> None:
    version = rest.plane.repository.model().latest.version
    for path in ("/v2/models/foldserve", f"/v2/models/foldserve/versions/{version}"):
        status, metadata = rest.json("GET", path)
        assert status == 200
        assert metadata == {
            "name": "foldserve",
            "versions": [version],
            "platform": "onnxruntime_onnx",
            "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 64]}],
            "outputs": [
                {"name": "logits", "datatype": "FP32", "shape": [-1, 10]},
                {"name": "probabilities", "datatype": "FP32", "shape": [-1, 10]},
            ],
        }
        assert rest.json("GET", f"{path}/ready") == (200, {"name": "foldserve", "ready": True})


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/v2/models/other", "model_name: unknown model 'other'"),
        ("/v2/models/foldserve/versions/7", "model_version: unknown version '7'"),
    ],
)
def test_an_unknown_model_or_version_is_404(rest: RestServer, path: str, message: str) -> None:
    status, answer = rest.json("GET", path)
    assert status == 404
    assert answer["error"].startswith(message)


@pytest.mark.parametrize(
    "path", ["/v2/models/other/ready", "/v2/models/foldserve/versions/7/ready"]
)
def test_a_model_not_served_is_not_ready_400_as_triton_answers(rest: RestServer, path: str) -> None:
    status, answer = rest.json("GET", path)
    assert status == 400 and answer["ready"] is False


def test_infer_json(rest: RestServer, tiny_model_path: Path) -> None:
    want = expected(tiny_model_path)
    status, answer = rest.json("POST", INFER, infer_body(id="call-1"))
    assert status == 200
    assert answer["model_name"] == "foldserve"
    assert answer["model_version"] == rest.plane.repository.model().latest.version
    assert answer["id"] == "call-1"
    assert [o["name"] for o in answer["outputs"]] == ["logits", "probabilities"]
    for output in answer["outputs"]:
        assert output["datatype"] == "FP32" and output["shape"] == [2, 10]
        got = np.array(output["data"], np.float32).reshape(2, 10)
        np.testing.assert_array_equal(got, want[output["name"]])


def test_infer_chosen_outputs_and_version(rest: RestServer) -> None:
    version = rest.plane.repository.model().latest.version
    path = f"/v2/models/foldserve/versions/{version}/infer"
    body = infer_body(outputs=[{"name": "probabilities"}], parameters={"timeout": 5_000_000})
    refused = infer_body(parameters={"note": 1.5})
    status, answer = rest.json("POST", path, refused)
    assert status == 400 and answer["error"].startswith("parameters.note: unknown parameter")
    status, answer = rest.json("POST", path, body)
    assert status == 200
    assert [o["name"] for o in answer["outputs"]] == ["probabilities"]
    assert "id" not in answer


def test_infer_binary_in_and_out(rest: RestServer, tiny_model_path: Path) -> None:
    want = expected(tiny_model_path)
    header = {
        "inputs": [
            {"name": "input", "shape": [2, 64], "datatype": "FP32",
             "parameters": {"binary_data_size": BATCH.nbytes}},
        ],
        "outputs": [
            {"name": "logits", "parameters": {"binary_data": True}}, {"name": "probabilities"},
        ],
    }  # fmt: skip
    text = json.dumps(header).encode()
    length = {"Inference-Header-Content-Length": str(len(text))}
    status, headers, body = rest.request("POST", INFER, text + BATCH.tobytes(), length)
    assert status == 200
    assert headers["content-type"] == "application/octet-stream"
    size = int(headers["inference-header-content-length"])
    answer = json.loads(body[:size])
    logits, probabilities = answer["outputs"]
    assert logits["parameters"] == {"binary_data_size": 80} and "data" not in logits
    np.testing.assert_array_equal(np.frombuffer(body[size:], "<f4").reshape(2, 10), want["logits"])
    assert len(body) == size + 80
    np.testing.assert_array_equal(
        np.array(probabilities["data"], np.float32).reshape(2, 10), want["probabilities"]
    )


def test_binary_data_output_asks_every_output_in_binary(rest: RestServer) -> None:
    body = infer_body(parameters={"binary_data_output": True})
    json_output = {"name": "probabilities", "parameters": {"binary_data": False}}
    body["outputs"] = [{"name": "logits"}, json_output]
    status, headers, reply = rest.request("POST", INFER, json.dumps(body).encode())
    assert status == 200
    size = int(headers["inference-header-content-length"])
    logits, probabilities = json.loads(reply[:size])["outputs"]
    assert logits["parameters"]["binary_data_size"] == 80 and "data" in probabilities
    assert len(reply) == size + 80


def test_repository_index(rest: RestServer) -> None:
    version = rest.plane.repository.model().latest.version
    entry = {"name": "foldserve", "version": version, "state": "READY", "reason": ""}
    assert rest.request("POST", "/v2/repository/index", b"")[0] == 200
    assert rest.json("POST", "/v2/repository/index", {}) == (200, [entry])
    assert rest.json("POST", "/v2/repository/index", {"ready": True}) == (200, [entry])
    status, answer = rest.json("POST", "/v2/repository/index", {"ready": "yes"})
    assert status == 400 and answer["error"].startswith("ready: expected a boolean")


def test_calls_are_counted_as_their_grpc_twins(start) -> None:
    server = start()
    server.json("POST", INFER, infer_body())
    server.json("POST", INFER, {"inputs": 5})
    server.json("GET", "/v2/models/foldserve/ready")
    server.json("GET", "/nowhere")
    version = server.plane.repository.model().latest.version

    def count(method: str, code: str, model: str = "foldserve") -> float | None:
        labels = {"model": model, "version": version if model else "", "method": method}
        return server.registry.get_sample_value(
            "foldserve_requests_total", {**labels, "code": code}
        )

    assert count("ModelInfer", "OK") == 1
    assert count("ModelReady", "OK") == 1
    # A body that does not decode and a path nobody serves name no model: model "".
    assert count("ModelInfer", "INVALID_ARGUMENT", model="") == 1
    assert count("unknown", "UNIMPLEMENTED", model="") == 1


# --- errors -----------------------------------------------------------------------------------


def test_an_unknown_path_is_404_and_a_wrong_method_405(rest: RestServer) -> None:
    for path in ("/", "/v1/models/foldserve", "/v2/models", "/v2/models/foldserve/explain"):
        status, headers, body = rest.request("GET", path)
        assert status == 404, path
        assert headers["content-type"] == "application/json"
        assert json.loads(body)["error"].startswith("path: no V2 endpoint")
    for method, path, allowed in [
        ("GET", INFER, "POST"),
        ("POST", "/v2/health/live", "GET"),
        ("DELETE", "/v2/models/foldserve", "GET"),
        ("GET", "/v2/repository/index", "POST"),
    ]:
        status, headers, body = rest.request(method, path, b"{}" if method == "POST" else None)
        assert status == 405, (method, path)
        assert headers["allow"] == allowed
        assert json.loads(body)["error"].startswith("method:")


@pytest.mark.parametrize(
    ("token", "status"), [(None, 401), ("Bearer wrong", 401), (f"Bearer {TOKEN}", 200)]
)
def test_the_token_is_required_like_over_grpc_but_not_by_probes(start, token, status) -> None:
    server = start(token=TOKEN)
    headers = {} if token is None else {"Authorization": token}
    for path in ("/v2/health/live", "/v2/health/ready"):  # what balancers and kubelets ask
        assert server.request("GET", path, None, headers)[0] == 200
    for method, path, body in [
        ("GET", "/v2", None),
        ("GET", "/v2/models/foldserve", None),
        ("GET", "/v2/models/foldserve/ready", None),
        ("POST", INFER, json.dumps(infer_body()).encode()),
        ("POST", "/v2/repository/index", b""),
    ]:
        got, _, answer = server.request(method, path, body, headers)
        assert got == status, path
        if status == 401:
            assert json.loads(answer)["error"].startswith("authorization:")


def test_a_body_over_the_limit_is_413_read_or_not(start) -> None:
    server = start(max_message_bytes=2000)
    big = json.dumps(infer_body(np.zeros((8, 64), np.float32))).encode()
    status, _, body = server.request("POST", INFER, big)
    assert status == 413
    assert "over the limit of 2000" in json.loads(body)["error"]
    # Chunked (no Content-Length): read up to the limit, then refused the same way.
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    chunks = iter([big[:1500], big[1500:]])
    connection.request("POST", INFER, body=chunks, encode_chunked=True)
    answer = connection.getresponse()
    assert answer.status == 413
    assert "over the limit" in json.loads(answer.read())["error"]
    connection.close()
    assert server.json("POST", INFER, infer_body(BATCH[:1]))[0] == 200


def test_too_many_calls_in_flight_is_429(start) -> None:
    server = start(max_in_flight=1)
    server.gate.enter()  # a call in flight
    status, answer = server.json("POST", INFER, infer_body())
    assert status == 429 and answer["error"].startswith("server busy")
    assert server.json("GET", "/v2/health/ready")[0] == 200  # a busy server is still ready
    server.gate.leave()
    assert server.json("POST", INFER, infer_body())[0] == 200


def test_draining_is_503_and_not_ready_while_live(start) -> None:
    server = start()
    server.gate.start_draining()
    status, answer = server.json("POST", INFER, infer_body())
    assert status == 503 and "draining" in answer["error"]
    assert server.json("GET", "/v2/health/ready") == (503, {"ready": False})
    assert server.json("GET", "/v2/health/live") == (200, {"live": True})


def test_a_classify_shaped_failure_would_be_400_and_an_unexpected_one_500(rest, monkeypatch):
    # FAILED_PRECONDITION is 400; a bug of ours is 500 with a bare message, and the server runs on.
    from foldserve.core.errors import failed_precondition

    def refuse(call, request):
        raise failed_precondition("model: not classifier-shaped")

    monkeypatch.setattr(rest.plane, "infer", refuse)
    assert rest.json("POST", INFER, infer_body())[0] == 400

    def crash(call, request):
        raise KeyError("bug")

    monkeypatch.setattr(rest.plane, "infer", crash)
    assert rest.json("POST", INFER, infer_body()) == (500, {"error": "ModelInfer: internal error"})
    monkeypatch.undo()
    assert rest.json("POST", INFER, infer_body())[0] == 200
