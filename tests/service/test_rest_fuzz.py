"""The gRPC fuzzer's cases (`foldserve.bench.fuzz`) sent to V2 REST: each drawn V2 call turned into
its REST twin (typed contents as JSON data, raw contents as binary data), garbled bytes sent as
bodies, and JSON bodies with a node swapped for an odd value. No answer is a 5xx, none hangs, and
REST agrees with the fuzzer's oracle: a valid call is 200, an invalid one a 4xx."""

from __future__ import annotations

import json
import urllib.parse
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from foldserve._proto.inference import grpc_predict_v2_pb2 as v2
from foldserve.api.v2_tensors import parameters
from foldserve.bench.fuzz.generate import Requests
from foldserve.bench.fuzz.oracle import METHODS, Served, is_valid, parse
from foldserve.server.config import MAX_MESSAGE_BYTES
from tests.service.rest_server import RestServer, start_rest

CALLS = 400
ODD_JSON = (None, True, -1, 2**70, 1.5, "x", "", [], {}, [[[]]], {"a": [1]})
HEADER = "Inference-Header-Content-Length"


@pytest.fixture(scope="module")
def rest(tiny_model_path: Path) -> Iterator[RestServer]:
    server = start_rest(tiny_model_path)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def served(rest: RestServer) -> Served:
    model = rest.plane.repository.model().latest.model
    return Served(
        name=model.name,
        versions=tuple(v.version for v in rest.plane.repository.model().versions),
        input_name="input",
        input_shape=(64,),
        classes=10,
        output_names=tuple(model.output_names),
        max_message_bytes=MAX_MESSAGE_BYTES,
    )


def _model_path(name: str, version: str, tail: str = "") -> str:
    path = f"/v2/models/{urllib.parse.quote(name, safe='')}"
    if version:
        path += f"/versions/{urllib.parse.quote(version, safe='')}"
    return path + tail


def _loaded(version: str, served: Served) -> bool:
    return not version or version in served.versions


def _infer(request: v2.ModelInferRequest) -> tuple[str, str, bytes, dict]:
    """The REST twin of a V2 ModelInfer: typed contents as JSON data, raw ones as binary."""
    raw = list(request.raw_input_contents)
    inputs = []
    for index, tensor in enumerate(request.inputs):
        entry = {"name": tensor.name, "shape": list(tensor.shape), "datatype": tensor.datatype}
        if tensor.parameters:
            entry["parameters"] = parameters(tensor.parameters)
        values = [v for _, field in tensor.contents.ListFields() for v in field]
        if tensor.HasField("contents"):
            entry["data"] = values
        if index < len(raw):
            entry.setdefault("parameters", {})["binary_data_size"] = len(raw[index])
        inputs.append(entry)
    body: dict = {"id": request.id, "inputs": inputs}
    if request.outputs:
        body["outputs"] = [{"name": o.name} for o in request.outputs]
    if request.parameters:
        body["parameters"] = parameters(request.parameters)
    header = json.dumps(body).encode()
    headers = {HEADER: str(len(header))} if raw else {}
    path = _model_path(request.model_name, request.model_version, "/infer")
    return "POST", path, header + b"".join(raw), headers


# The V2 operations with a REST twin here (the others: their own tests over REST).
TWINS = frozenset(
    {"ModelInfer", "ModelReady", "ModelMetadata", "ModelConfig", "ModelStatistics",
     "RepositoryIndex", "ServerLive", "ServerReady", "ServerMetadata"}
)  # fmt: skip


def twin(name: str, message) -> tuple[str, str, bytes | None, dict]:
    """(verb, path, body, headers) of the REST call that asks what `message` asks."""
    if name == "ModelInfer":
        return _infer(message)
    if name == "ModelStatistics" and not message.name and not message.version:
        return "GET", "/v2/models/stats", None, {}
    tails = {"ModelReady": "/ready", "ModelMetadata": "", "ModelConfig": "/config"}
    if name in tails or name == "ModelStatistics":
        tail = tails.get(name, "/stats")
        return "GET", _model_path(message.name, message.version, tail), None, {}
    if name == "RepositoryIndex":
        return "POST", "/v2/repository/index", json.dumps({"ready": message.ready}).encode(), {}
    paths = {"ServerLive": "/v2/health/live", "ServerReady": "/v2/health/ready"}
    return "GET", paths.get(name, "/v2"), None, {}


def swap_a_node(value, rng: np.random.Generator):
    """`value` with one node (an object's member or an array's element) replaced by an odd one."""
    if isinstance(value, dict) and value and rng.random() < 0.7:
        key = list(value)[rng.integers(len(value))]
        return {**value, key: swap_a_node(value[key], rng)}
    if isinstance(value, list) and value and rng.random() < 0.7:
        index = int(rng.integers(len(value)))
        return [*value[:index], swap_a_node(value[index], rng), *value[index + 1 :]]
    return ODD_JSON[rng.integers(len(ODD_JSON))]


def call(rest: RestServer, verb: str, path: str, body: bytes | None, headers: dict) -> int:
    """The status of one call; 0 for a hang (no answer within the timeout)."""
    try:
        return rest.request(verb, path, body, headers)[0]
    except TimeoutError:
        return 0


@pytest.mark.parametrize("seed", [7, 11])
def test_the_fuzzers_cases_over_rest(rest: RestServer, served: Served, seed: int) -> None:
    requests, rng = Requests(served, seed), np.random.default_rng(seed)
    statuses: Counter = Counter()
    disagreements = []
    for _ in range(CALLS):
        method, data = requests.draw()
        name = METHODS[method].name
        if not method.startswith("/inference.") or name not in TWINS:
            continue  # the domain API (Predict, DescribeModel) has no REST twin
        if name.startswith("SystemSharedMemory"):
            continue  # off here, 501 by design: tests/service/test_shared_memory*.py
        message = parse(method, data)
        if message is None:  # bytes that are no message at all: a body that is no JSON
            status = call(rest, "POST", "/v2/models/foldserve/infer", data, {})
            statuses[status] += 1
            assert status == 400, data[:64]
            continue
        verb, path, body, headers = twin(name, message)
        status = call(rest, verb, path, body, headers)
        statuses[status] += 1
        valid = is_valid(method, data, served) or name == "RepositoryIndex"
        if name == "ModelReady":  # REST answers 400 (gRPC: ready=false) for a model not served
            valid = valid and message.name == served.name and _loaded(message.version, served)
        if (status == 200) != valid or not 200 <= status < 500:
            disagreements.append((status, valid, verb, path[:80], (body or b"")[:160]))
        if body and not headers and rng.random() < 0.5:
            odd = json.dumps(swap_a_node(json.loads(body), rng)).encode()
            statuses[status := call(rest, verb, path, odd, {})] += 1
            if not 200 <= status < 500:
                disagreements.append((status, None, verb, path[:80], odd[:160]))
    assert statuses[0] == 0, "hangs"
    assert not [s for s in statuses if s >= 500], statuses
    assert disagreements == [], disagreements[:5]
    assert statuses[200] > 20 and statuses[400] > 20, statuses
