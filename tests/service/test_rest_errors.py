"""V2 REST: a request that cannot be valid is 400 with a message naming its field, whether its
JSON, its binary layout or its fit to the model is wrong; never a 5xx."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.service.rest_server import RestServer, start_rest

INFER = "/v2/models/foldserve/infer"
HEADER = "Inference-Header-Content-Length"
ROW = [0.5] * 64
LENGTH = "inference-header-content-length"
SIZE = "inputs[0].parameters.binary_data_size"


@pytest.fixture(scope="module")
def rest(tiny_model_path: Path) -> Iterator[RestServer]:
    server = start_rest(tiny_model_path)
    yield server
    server.stop()


def tensor(**fields) -> dict:
    return {"name": "input", "shape": [1, 64], "datatype": "FP32", "data": ROW, **fields}


def without(key: str) -> dict:
    found = tensor()
    del found[key]
    return found


def deep(levels: int) -> str:
    return "[" * levels + "]" * levels


JSON_ERRORS = [
    (b"{", "body: not valid JSON"),
    (b"\xff\xfe{}", "body: not valid JSON"),
    (b"[]", "body: expected a JSON object, got an array"),
    ('{"inputs": [{"data": ' + deep(100_000) + "}]}", "body: not valid JSON (nested too deeply)"),
    ({"inputs": 5}, "inputs: expected an array of input tensors, got an integer"),
    ({"inputs": [5]}, "inputs[0]: expected an input tensor object, got an integer"),
    ({"inputs": [tensor(name=7)]}, "inputs[0].name: expected a string, got an integer"),
    ({"inputs": [without("name")]}, "inputs[0].name: expected a string, got null"),
    ({"inputs": [tensor(datatype=32)]}, "inputs[0].datatype: expected a string"),
    ({"inputs": [tensor(datatype="FP33")]}, "inputs[0].datatype: unknown datatype 'FP33'"),
    ({"inputs": [tensor(datatype="BF16")]}, "inputs[0].datatype: unknown datatype 'BF16'"),
    (
        {"inputs": [tensor(datatype="BYTES")]},
        "inputs[0].data: value 0 (row-major) is 0.5; expected a",
    ),
    ({"inputs": [tensor(shape="1,64")]}, "inputs[0].shape: expected an array of dimensions"),
    ({"inputs": [tensor(shape=[1, "64"])]}, "inputs[0].shape[1]: expected an integer, got a str"),
    ({"inputs": [tensor(shape=[1, True])]}, "inputs[0].shape[1]: expected an integer, got a bool"),
    ({"inputs": [tensor(shape=[1, -64])]}, "inputs[0].shape: [1, -64] has a negative dimension"),
    (
        {"inputs": [tensor(shape=[0, 2**62], data=[])]},
        "inputs[0].shape: [0, 4611686018427387904] is no",
    ),
    ({"inputs": [tensor(shape=[0] * 65, data=[])]}, "inputs[0].shape: [0, 0, 0"),
    ({"inputs": [without("data")]}, "inputs[0]: no data for input 'input'; expected 64"),
    ({"inputs": [tensor(data=[*ROW[:-1], "x"])]}, 'inputs[0].data: value 63 (row-major) is "x"'),
    (
        '{"inputs": [{"name": "input", "shape": [1, 1], "datatype": "FP32", "data": [NaN]}]}',
        "body: not valid JSON (NaN is not",
    ),
    ({"inputs": [tensor(data=[*ROW[:-1], 1e400])]}, "body: not valid JSON"),
    ({"inputs": [tensor(parameters=[1])]}, "inputs[0].parameters: expected an object"),
    (
        {"inputs": [tensor(parameters={"k": None})]},
        "inputs[0].parameters.k: expected a string, number or",
    ),
    ({"inputs": [tensor()], "id": 5}, "id: expected a string, got an integer"),
    ({"inputs": [tensor()], "id": "a" * 2000}, "id: 2000 characters; at most 1024"),
    ({"inputs": [tensor()], "parameters": "x"}, "parameters: expected an object of parameters"),
    (
        {"inputs": [tensor()], "parameters": {"binary_data_output": 1}},
        "parameters.binary_data_output: expected a boolean",
    ),
    ({"inputs": [tensor()], "outputs": {"name": "logits"}}, "outputs: expected an array"),
    ({"inputs": [tensor()], "outputs": [{"name": 1}]}, "outputs[0].name: expected a string"),
    (
        {
            "inputs": [tensor()],
            "outputs": [{"name": "logits", "parameters": {"binary_data": "yes"}}],
        },
        "outputs[0].parameters.binary_data: expected a bool",
    ),
    (
        {"inputs": [tensor()], "model_name": "other"},
        "model_name: 'other' in the body, but the URL names",
    ),
    ({"inputs": [tensor()], "model_version": "3"}, "model_version: '3' in the body, but"),
    ({"inputs": [tensor()], "model_name": 3}, "model_name: expected a string, got an integer"),
    # What the data plane finds: the request does not fit the model.
    ({"inputs": [tensor(name="x")]}, "inputs[0].name: unknown input 'x'"),
    ({"inputs": [tensor(), tensor()]}, "inputs[1].name: input 'input' given twice"),
    ({"inputs": []}, "inputs: input(s) ['input'] missing"),
    ({"inputs": [tensor(datatype="FP64")]}, "inputs[0].datatype: input 'input' is FP32"),
    ({"inputs": [tensor(shape=[64], data=ROW)]}, "inputs[0].shape: input 'input' has shape"),
    (
        {"inputs": [tensor(data=[*ROW[:-1], 1e300])]},
        "inputs[0].data: value 63 (row-major) is 1e+300",
    ),
    (
        {"inputs": [tensor()], "outputs": [{"name": "nope"}]},
        "outputs[0].name: unknown output 'nope'",
    ),
    (
        {"inputs": [tensor()], "outputs": [{"name": "logits"}, {"name": "logits"}]},
        "outputs[1].name: output 'logits' requested",
    ),
]


@pytest.mark.parametrize(("body", "message"), JSON_ERRORS)
def test_a_malformed_json_request_is_400_naming_the_field(rest, body, message) -> None:
    if isinstance(body, dict):
        body = json.dumps(body)
    data = body.encode() if isinstance(body, str) else body
    status, headers, answer = rest.request("POST", INFER, data)
    assert status == 400, answer[:300]
    assert headers["content-type"] == "application/json"
    assert json.loads(answer)["error"].startswith(message), json.loads(answer)["error"]


def binary(size: int = 256, header_length: str | None = None, extra: bytes = b"", **fields):
    values = bytes(256)  # 64 FP32 zeros
    header = json.dumps(
        {"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32",
                     "parameters": {"binary_data_size": size}, **fields}]}
    ).encode()  # fmt: skip
    length = str(len(header)) if header_length is None else header_length
    return header + values + extra, {HEADER: length}


BINARY_ERRORS = [
    (binary(header_length="abc"), f"{LENGTH}: 'abc' is not a number of bytes"),
    (binary(header_length="-5"), f"{LENGTH}: '-5' is not a number of bytes"),
    (binary(header_length="99999"), f"{LENGTH}: 99999 bytes, but the body has"),
    (binary(header_length="10"), "body: not valid JSON"),
    (binary(size=300), f"{SIZE}: 300 bytes, but 256 bytes of binary data are left"),
    (binary(size=-1), f"{SIZE}: -1 bytes"),
    (binary(size="256"), f"{SIZE}: expected a number of bytes, got a string"),
    (binary(size=252), f"{SIZE}: expected 256 bytes (64 FP32 values"),
    (binary(extra=b"\0" * 8), "body: 8 bytes of binary data after the last input's"),
    (binary(data=ROW), "inputs[0].data: data given both in JSON and as binary"),
    (
        (binary()[0], {}),
        "body: more after the JSON value (from character 110); binary data after it needs",
    ),
    ((binary(size=0)[0][:-256], {}), f"{SIZE}: binary data, but no {LENGTH} header"),
    (
        (binary()[0], {**binary()[1], "Content-Encoding": "gzip"}),
        "content-encoding: 'gzip' is not served",
    ),
]


@pytest.mark.parametrize(("request_", "message"), BINARY_ERRORS)
def test_a_malformed_binary_request_is_400_naming_the_field(rest, request_, message) -> None:
    body, headers = request_
    status, _, answer = rest.request("POST", INFER, body, headers)
    assert status == 400, answer[:300]
    assert json.loads(answer)["error"].startswith(message), json.loads(answer)["error"]


def test_a_well_formed_binary_request_is_answered(rest: RestServer) -> None:
    body, headers = binary()
    assert rest.request("POST", INFER, body, headers)[0] == 200
