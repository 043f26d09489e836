"""Triton's classification extension over V2 REST: `outputs[i].parameters.classification` answers
the top k classes as BYTES [batch, k] in JSON or binary, with tritonclient.http unchanged; every
bad k is a 400 naming the parameter."""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator

import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from tests.service.classes import expected_classes
from tests.service.conftest import Served
from tests.service.rest_server import RestServer

INFER = "/v2/models/foldserve/infer"
BATCH = np.random.default_rng(6).normal(size=(3, 64)).astype(np.float32)
LABELS = [f"class_{i}" for i in range(10)]


@pytest.fixture(scope="module")
def rest(shared_server: Served) -> RestServer:
    return RestServer(shared_server.running, shared_server.registry)


def body(outputs: list[dict], **request) -> dict:
    features = {"name": "input", "shape": [3, 64], "datatype": "FP32", "data": BATCH.tolist()}
    return {"inputs": [features], "outputs": outputs, **request}


def probabilities(rest: RestServer) -> np.ndarray:
    return rest.running.repository.model().latest.model.run_classifier(BATCH)["probabilities"]


def test_json_classes_beside_a_plain_output(rest: RestServer) -> None:
    outputs = [{"name": "probabilities", "parameters": {"classification": 2}}, {"name": "logits"}]
    status, answer = rest.json("POST", INFER, body(outputs))
    assert status == 200, answer
    classes, logits = answer["outputs"]
    assert (classes["datatype"], classes["shape"]) == ("BYTES", [3, 2])
    expected = expected_classes(probabilities(rest), 2, LABELS)
    assert classes["data"] == [s for row in expected for s in row]
    assert (logits["datatype"], logits["shape"]) == ("FP32", [3, 10])


def test_binary_classes(rest: RestServer) -> None:
    outputs = [{"name": "probabilities", "parameters": {"classification": 4, "binary_data": True}}]
    status, headers, answer = rest.request("POST", INFER, json.dumps(body(outputs)).encode())
    assert status == 200, answer[:300]
    size = int(headers["inference-header-content-length"])
    (output,) = json.loads(answer[:size])["outputs"]
    assert output["parameters"]["binary_data_size"] == len(answer) - size
    data, values, offset = answer[size:], [], 0
    while offset < len(data):
        (length,) = struct.unpack_from("<I", data, offset)
        values.append(data[offset + 4 : offset + 4 + length].decode())
        offset += 4 + length
    expected = expected_classes(probabilities(rest), 4, LABELS)
    assert values == [s for row in expected for s in row]


FIELD = "outputs[0].parameters.classification"


@pytest.mark.parametrize(
    ("k", "message"),
    [
        (0, f"{FIELD}: 0; expected 1 to 10, the number of classes of output 'probabilities'"),
        (11, f"{FIELD}: 11; expected 1 to 10"),
        (2.0, f"{FIELD}: expected an integer number of classes, got 2.0"),
        (True, f"{FIELD}: expected an integer number of classes, got True"),
        ("2", f"{FIELD}: expected an integer number of classes, got '2'"),
    ],
    ids=["zero", "too-many", "float", "bool", "string"],
)
def test_a_bad_class_count_is_400_naming_the_parameter(
    rest: RestServer, k: object, message: str
) -> None:
    output = {"name": "probabilities", "parameters": {"classification": k}}
    status, answer = rest.json("POST", INFER, body([output]))
    assert status == 400
    assert answer["error"].startswith(message)


def test_server_metadata_lists_the_extension(rest: RestServer) -> None:
    status, answer = rest.json("GET", "/v2")
    assert status == 200
    assert {"classification", "binary_tensor_data"} <= set(answer["extensions"])


@pytest.fixture
def client(rest: RestServer) -> Iterator[triton.InferenceServerClient]:
    found = triton.InferenceServerClient(f"127.0.0.1:{rest.port}", network_timeout=10)
    yield found
    found.close()


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_tritonclient_http_asks_for_classes(
    client: triton.InferenceServerClient, rest: RestServer, binary: bool
) -> None:
    features = triton.InferInput("input", [3, 64], "FP32")
    features.set_data_from_numpy(BATCH)
    output = triton.InferRequestedOutput("probabilities", binary_data=binary, class_count=3)
    classes = client.infer("foldserve", [features], outputs=[output]).as_numpy("probabilities")
    assert classes.shape == (3, 3)
    shown = [[v.decode() if isinstance(v, bytes) else v for v in row] for row in classes.tolist()]
    assert shown == expected_classes(probabilities(rest), 3, LABELS)
    too_many = triton.InferRequestedOutput("probabilities", class_count=11)
    with pytest.raises(InferenceServerException) as caught:
        client.infer("foldserve", [features], outputs=[too_many])
    assert caught.value.status() == "400"
    assert caught.value.message().startswith(f"{FIELD}: 11; expected 1 to 10")
