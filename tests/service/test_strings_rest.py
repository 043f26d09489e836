"""String tensors (V2 BYTES, ONNX `tensor(string)`) over V2 REST: JSON strings and Triton's binary
layout both ways, every malformed request answered 400 naming its field, and tritonclient.http
unchanged."""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator

import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from tests.service.rest_server import RestServer, start_rest
from tests.service.string_files import CODES, write_string_grid_model, write_words_model

INFER = "/v2/models/foldserve/infer"
HEADER = "Inference-Header-Content-Length"
WORDS = ["cat", "naïve", "", "dog", "a\x00b", "日本"]


@pytest.fixture(scope="module")
def words(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RestServer]:
    server = start_rest(write_words_model(tmp_path_factory.mktemp("words") / "model.onnx"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def grid(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RestServer]:
    server = start_rest(write_string_grid_model(tmp_path_factory.mktemp("grid") / "model.onnx"))
    yield server
    server.stop()


def layout(values: list[bytes]) -> bytes:
    return b"".join(struct.pack("<I", len(v)) + v for v in values)


def unlayout(data: bytes) -> list[bytes]:
    values, offset = [], 0
    while offset < len(data):
        (length,) = struct.unpack_from("<I", data, offset)
        values.append(data[offset + 4 : offset + 4 + length])
        offset += 4 + length
    return values


def binary_body(data: bytes, shape: list[int], **request) -> tuple[bytes, dict[str, str]]:
    tensor = {"name": "text", "shape": shape, "datatype": "BYTES"}
    tensor["parameters"] = {"binary_data_size": len(data)}
    header = json.dumps({"inputs": [tensor], **request}).encode()
    return header + data, {HEADER: str(len(header))}


def json_body(data: object, shape: list[int]) -> bytes:
    return json.dumps({"inputs": [{"name": "text", "shape": shape, "datatype": "BYTES",
                                   "data": data}]}).encode()  # fmt: skip


def test_json_strings_answer_json_strings(words: RestServer) -> None:
    status, answer = words.json("POST", INFER, json.loads(json_body([WORDS[:3], WORDS[3:]], [6])))
    assert status == 200, answer
    loud, code = answer["outputs"]
    assert loud == {"name": "loud", "datatype": "BYTES", "shape": [6],
                    "data": [w + "!" for w in WORDS]}  # fmt: skip
    assert code["data"] == [CODES.get(w, -1) for w in WORDS]


def test_binary_strings_answer_binary(words: RestServer) -> None:
    values = [w.encode() for w in WORDS]
    body, headers = binary_body(layout(values), [6], parameters={"binary_data_output": True})
    status, answer_headers, answer = words.request("POST", INFER, body, headers)
    assert status == 200, answer[:300]
    size = int(answer_headers["inference-header-content-length"])
    loud, code = json.loads(answer[:size])["outputs"]
    assert loud["datatype"] == "BYTES" and loud["shape"] == [6]
    assert code["parameters"]["binary_data_size"] == 6 * 8
    end = size + loud["parameters"]["binary_data_size"]
    assert unlayout(answer[size:end]) == [v + b"!" for v in values]
    assert list(struct.unpack("<6q", answer[end:])) == [CODES.get(w, -1) for w in WORDS]


def test_two_dimensional_strings_round_trip(grid: RestServer) -> None:
    data = [["é", ""], ["\x00", "two words"]]
    body = {"inputs": [{"name": "grid", "shape": [2, 2], "datatype": "BYTES", "data": data}]}
    status, answer = grid.json("POST", INFER, body)
    assert status == 200, answer
    assert answer["outputs"][0]["shape"] == [2, 2]
    assert answer["outputs"][0]["data"] == [v for row in data for v in row]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (json_body(["a", 1], [2]), "inputs[0].data: value 1 (row-major) is 1; expected a string "
         "(BYTES)"),
        (json_body(["a", None], [2]), "inputs[0].data: value 1 (row-major) is null"),
        (json_body(["a"], [2]), "inputs[0].data: expected 2 values for shape [2]"),
        (b'{"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["\\ud800"]}]}',
         "inputs[0].data: value 0 (row-major) has a lone surrogate at character 0"),
        (json_body([["a"]], [1, 1]), "inputs[0].shape: input 'text' has shape [dynamic]"),
    ],
    ids=["number", "null", "count", "lone-surrogate", "rank"],
)  # fmt: skip
def test_bad_json_strings_name_the_field(words: RestServer, body: bytes, message: str) -> None:
    status, _, answer = words.request("POST", INFER, body)
    assert status == 400
    assert message in json.loads(answer)["error"]


FIELD = "inputs[0].parameters.binary_data_size"


@pytest.mark.parametrize(
    ("data", "shape", "message"),
    [
        (b"\x03\x00", [1], f"{FIELD}: element 0 at byte 0: 2 byte(s) left, too few for its "
         "4-byte little-endian length"),
        (struct.pack("<I", 50) + b"cat", [1], f"{FIELD}: element 0 at byte 0: its length says "
         "50 bytes, but 3 are left"),
        (layout([b"a", b"b"]), [3], f"{FIELD}: expected 3 BYTES element(s) for shape [3]"),
        (layout([b"a", b"b"]), [1], f"{FIELD}: 5 byte(s) left after the 1 BYTES element(s)"),
        (layout([b"ok", b"\xe9t\xe9"]), [2], "inputs[0]: element 1 (row-major) is not valid "
         "UTF-8"),
    ],
    ids=["short-prefix", "length-past-end", "too-few", "too-many", "not-utf8"],
)  # fmt: skip
def test_bad_binary_strings_name_the_field(
    words: RestServer, data: bytes, shape: list[int], message: str
) -> None:
    body, headers = binary_body(data, shape)
    status, _, answer = words.request("POST", INFER, body, headers)
    assert status == 400
    assert message in json.loads(answer)["error"]


def test_binary_data_size_cuts_the_layout_short(words: RestServer) -> None:
    """A `binary_data_size` smaller than the layout: the element is checked against its own
    bytes, not the rest of the body."""
    data = layout([b"cat", b"dog"])
    body, headers = binary_body(data, [2])
    header_length = int(headers[HEADER])
    short = body[:header_length].replace(b'"binary_data_size": 14', b'"binary_data_size": 10')
    headers = {HEADER: str(len(short))}
    status, _, answer = words.request("POST", INFER, short + data, headers)
    assert status == 400
    assert json.loads(answer)["error"] == (
        f"{FIELD}: element 1 at byte 7: 3 byte(s) left, too few for its 4-byte little-endian length"
    )


@pytest.fixture
def client(words: RestServer) -> Iterator[triton.InferenceServerClient]:
    found = triton.InferenceServerClient(f"127.0.0.1:{words.port}", network_timeout=10)
    yield found
    found.close()


@pytest.mark.parametrize("binary_out", [False, True], ids=["json-out", "binary-out"])
@pytest.mark.parametrize("binary_in", [False, True], ids=["json-in", "binary-in"])
def test_tritonclient_http_sends_and_reads_strings(
    client: triton.InferenceServerClient, binary_in: bool, binary_out: bool
) -> None:
    values = np.array([b"cat", "naïve", "", b"bird"], dtype=np.object_)
    text = triton.InferInput("text", [4], "BYTES")
    text.set_data_from_numpy(values, binary_data=binary_in)
    outputs = [triton.InferRequestedOutput(n, binary_data=binary_out) for n in ("loud", "code")]
    result = client.infer("foldserve", [text], outputs=outputs)
    loud = result.as_numpy("loud")
    shown = [v.decode() if isinstance(v, bytes) else v for v in loud.tolist()]
    assert shown == ["cat!", "naïve!", "!", "bird!"]
    assert result.as_numpy("code").tolist() == [1, -1, -1, 3]
    assert client.get_model_metadata("foldserve")["inputs"][0]["datatype"] == "BYTES"


def test_tritonclient_http_hears_the_utf8_refusal(client: triton.InferenceServerClient) -> None:
    text = triton.InferInput("text", [2], "BYTES")
    text.set_data_from_numpy(np.array([b"ok", b"\xff"], dtype=np.object_), binary_data=True)
    with pytest.raises(InferenceServerException) as caught:
        client.infer("foldserve", [text])
    assert caught.value.status() == "400"
    assert caught.value.message().startswith("inputs[0]: element 1 (row-major) is not valid UTF-8")
