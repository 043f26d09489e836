"""V2 REST tensors (`api/rest_tensors.py`) over real sockets: every datatype in JSON and in binary,
both ways, and every malformed request answered 400 naming its field."""

from __future__ import annotations

import json
from collections.abc import Iterator

import numpy as np
import pytest

from tests.service.foreign_files import ELEMENT_TYPES, write_every_datatype_model
from tests.service.rest_server import RestServer, start_rest

INFER = "/v2/models/foldserve/infer"
HEADER = "Inference-Header-Content-Length"


def edge_values(datatype: str) -> np.ndarray:
    """A [2, 3] tensor of `datatype` with its extremes and some ordinary values."""
    dtype = np.dtype(ELEMENT_TYPES[datatype][1])
    if dtype.kind == "b":
        return np.array([[True, False, True], [False, False, True]])
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return np.array([[info.min, info.max, 0], [1, info.max - 1, 7]], dtype)
    info = np.finfo(dtype)
    return np.array([[info.min, info.max, 0.0], [-1.5, info.tiny, 0.1]], dtype)


VALUES = {name: edge_values(name) for name in ELEMENT_TYPES}


@pytest.fixture(scope="module")
def every(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RestServer]:
    """A server of a model with one input and one output of every datatype."""
    path = write_every_datatype_model(tmp_path_factory.mktemp("every") / "model.onnx")
    server = start_rest(path)
    yield server
    server.stop()


def request_of(binary_in: bool, binary_out: bool, nested: bool = True) -> tuple[bytes, dict]:
    inputs, raw = [], []
    for name, values in VALUES.items():
        tensor = {"name": f"x_{name}", "shape": [2, 3], "datatype": name}
        if binary_in:
            data = values.astype(values.dtype.newbyteorder("<")).tobytes()
            tensor["parameters"] = {"binary_data_size": len(data)}
            raw.append(data)
        else:
            tensor["data"] = values.tolist() if nested else values.ravel().tolist()
        inputs.append(tensor)
    header = json.dumps({"inputs": inputs, "parameters": {"binary_data_output": binary_out}})
    headers = {HEADER: str(len(header))} if binary_in else {}
    return header.encode() + b"".join(raw), headers


def outputs_of(body: bytes, headers: dict) -> dict[str, np.ndarray]:
    size = int(headers.get("inference-header-content-length", len(body)))
    answer, offset, found = json.loads(body[:size]), size, {}
    for output in answer["outputs"]:
        dtype = np.dtype(ELEMENT_TYPES[output["datatype"]][1])
        if "data" in output:
            found[output["name"]] = np.array(output["data"], dtype).reshape(output["shape"])
        else:
            end = offset + output["parameters"]["binary_data_size"]
            wire = np.frombuffer(body[offset:end], dtype.newbyteorder("<"))
            found[output["name"]] = wire.astype(dtype).reshape(output["shape"])
            offset = end
    assert offset == len(body)
    return found


@pytest.mark.parametrize("binary_out", [False, True], ids=["json-out", "binary-out"])
@pytest.mark.parametrize("binary_in", [False, True], ids=["json-in", "binary-in"])
def test_every_datatype_round_trips(every: RestServer, binary_in: bool, binary_out: bool) -> None:
    body, headers = request_of(binary_in, binary_out)
    status, answer_headers, answer = every.request("POST", INFER, body, headers)
    assert status == 200, answer[:300]
    expected_type = "application/octet-stream" if binary_out else "application/json"
    assert answer_headers["content-type"] == expected_type
    found = outputs_of(answer, answer_headers)
    assert list(found) == [f"y_{name}" for name in VALUES]
    for name, values in VALUES.items():
        assert found[f"y_{name}"].dtype == values.dtype, name
        np.testing.assert_array_equal(found[f"y_{name}"], values, err_msg=name)


def test_flat_and_nested_data_are_the_same_tensor(every: RestServer) -> None:
    answers = []
    for nested in (False, True):
        body, headers = request_of(False, False, nested)
        status, answer_headers, answer = every.request("POST", INFER, body, headers)
        assert status == 200
        answers.append(outputs_of(answer, answer_headers))
    for name in answers[0]:
        np.testing.assert_array_equal(answers[0][name], answers[1][name])


def body_with(datatype: str, data: object) -> dict:
    tensors = []
    for name, values in VALUES.items():
        tensor = {"name": f"x_{name}", "shape": [2, 3], "datatype": name, "data": values.tolist()}
        if name == datatype:
            tensor["data"] = data
        tensors.append(tensor)
    return {"inputs": tensors}


INDEX = list(ELEMENT_TYPES).index


@pytest.mark.parametrize(
    ("datatype", "data", "message"),
    [
        ("BOOL", [1, 0, 1, 0, 0, 1], "data: value 0 (row-major) is 1; expected true or false"),
        (
            "INT8",
            [1, 2, 128, 0, 0, 0],
            "data: value 2 (row-major) is 128; expected an integer from -128",
        ),
        (
            "UINT8",
            [[1, 2, 3], [4, -1, 6]],
            "data: value 4 (row-major) is -1; expected an integer from 0",
        ),
        ("INT32", [1, 2, 3, 4, 5, 6.0], "data: value 5 (row-major) is 6.0; expected an integer"),
        ("INT64", [1, 2, 3, 4, 5, True], "data: value 5 (row-major) is true; expected an integer"),
        ("UINT64", [2**64, 0, 0, 0, 0, 0], "data: value 0 (row-major) is 18446744073709551616"),
        (
            "FP16",
            [70000.0, 0, 0, 0, 0, 0],
            "data: value 0 (row-major) is 70000.0; expected a number from -65504",
        ),
        ("FP32", [1e39, 0, 0, 0, 0, 0], "data: value 0 (row-major) is 1e+39; expected a number"),
        ("FP64", [1, 2, 3, 4, "5", 6], 'data: value 4 (row-major) is "5"; expected a number from'),
        ("FP64", [1, 2, 3, 4, None, 6], "data: value 4 (row-major) is null"),
        ("FP32", [1, 2, 3, 4, 5], "data: expected 6 values for shape [2, 3] (row-major, flat or"),
        ("FP32", [[1, 2, 3], [4, 5, 6], [7]], "data: expected 6 values for shape [2, 3]"),
        ("FP32", "1,2,3,4,5,6", "data: expected an array of FP32 values, got a string"),
        ("FP32", {"values": [1]}, "data: expected an array of FP32 values, got an object"),
    ],
)
def test_wrong_values_are_400_naming_the_field(every, datatype, data, message) -> None:
    status, answer = every.json("POST", INFER, body_with(datatype, data))
    assert status == 400
    assert answer["error"].startswith(f"inputs[{INDEX(datatype)}].{message}"), answer["error"]


def test_binary_bools_must_be_0_or_1(every: RestServer) -> None:
    body, headers = request_of(True, False)
    offset = int(headers[HEADER])  # BOOL comes first
    spoiled = body[:offset] + b"\x02" + body[offset + 1 :]
    status, _, answer = every.request("POST", INFER, spoiled, headers)
    assert status == 400
    assert json.loads(answer)["error"].startswith(
        "inputs[0].parameters.binary_data_size[0]: byte 2 is not a BOOL"
    )
