"""String tensors (V2 BYTES, ONNX `tensor(string)`) over V2 gRPC: typed `bytes_contents` and raw
4-byte-length layout both ways, model metadata, every malformed request answered
INVALID_ARGUMENT naming its field, and tritonclient.grpc unchanged."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from foldserve._proto.foldserve.v1 import predictor_pb2 as predictor
from foldserve._proto.foldserve.v1 import predictor_pb2_grpc as predictor_grpc
from foldserve._proto.inference import grpc_predict_v2_pb2 as pb
from foldserve._proto.inference import grpc_predict_v2_pb2_grpc as pb_grpc
from tests.service.rest_server import RestServer, start_rest
from tests.service.string_files import CODES, write_string_grid_model, write_words_model
from tests.service.subprocess_server import REPO, env

Tensor = pb.ModelInferRequest.InferInputTensor
WORDS = [b"cat", "naïve".encode(), b"", b"dog", b"a\x00b"]
GRID = [["é".encode(), b""], [b"\x00", b"two words"], [b"x" * 300, "日本".encode()]]


@dataclass
class Serving:
    """A server (gRPC and REST) and a V2 gRPC stub to it."""

    server: RestServer
    stub: pb_grpc.GRPCInferenceServiceStub
    channel: grpc.Channel


@contextmanager
def serving(path: Path) -> Iterator[Serving]:
    server = start_rest(path)
    channel = grpc.insecure_channel(f"127.0.0.1:{server.running.port}")
    try:
        yield Serving(server, pb_grpc.GRPCInferenceServiceStub(channel), channel)
    finally:
        channel.close()
        server.stop()


@pytest.fixture(scope="module")
def words(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Serving]:
    with serving(write_words_model(tmp_path_factory.mktemp("words") / "model.onnx")) as found:
        yield found


@pytest.fixture(scope="module")
def grid(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Serving]:
    with serving(write_string_grid_model(tmp_path_factory.mktemp("grid") / "model.onnx")) as found:
        yield found


def layout(values: list[bytes]) -> bytes:
    return b"".join(struct.pack("<I", len(v)) + v for v in values)


def unlayout(data: bytes) -> list[bytes]:
    values, offset = [], 0
    while offset < len(data):
        (length,) = struct.unpack_from("<I", data, offset)
        values.append(data[offset + 4 : offset + 4 + length])
        offset += 4 + length
    return values


def typed(name: str, values: list[bytes], shape: list[int]) -> pb.ModelInferRequest:
    tensor = Tensor(name=name, datatype="BYTES", shape=shape)
    tensor.contents.bytes_contents.extend(values)
    return pb.ModelInferRequest(model_name="foldserve", inputs=[tensor])


def raw(name: str, data: bytes, shape: list[int], datatype="BYTES") -> pb.ModelInferRequest:
    tensor = Tensor(name=name, datatype=datatype, shape=shape)
    return pb.ModelInferRequest(model_name="foldserve", inputs=[tensor], raw_input_contents=[data])


def test_metadata_says_bytes(words: Serving) -> None:
    meta = words.stub.ModelMetadata(pb.ModelMetadataRequest(name="foldserve"), timeout=5)
    assert [(t.name, t.datatype, list(t.shape)) for t in meta.inputs] == [("text", "BYTES", [-1])]
    assert [(t.name, t.datatype) for t in meta.outputs] == [("loud", "BYTES"), ("code", "INT64")]
    status, rest = words.server.json("GET", "/v2/models/foldserve")
    assert status == 200 and rest["inputs"][0]["datatype"] == "BYTES"


def test_typed_strings_answer_raw(words: Serving) -> None:
    reply = words.stub.ModelInfer(typed("text", WORDS, [5]), timeout=5)
    loud, code = reply.outputs
    assert (loud.name, loud.datatype, list(loud.shape)) == ("loud", "BYTES", [5])
    assert not loud.HasField("contents") and not code.HasField("contents")
    assert unlayout(reply.raw_output_contents[0]) == [w + b"!" for w in WORDS]
    codes = struct.unpack("<5q", reply.raw_output_contents[1])
    assert list(codes) == [CODES.get(w.decode(), -1) for w in WORDS]


def test_raw_strings_answer_raw(words: Serving) -> None:
    reply = words.stub.ModelInfer(raw("text", layout(WORDS), [5]), timeout=5)
    assert [o.datatype for o in reply.outputs] == ["BYTES", "INT64"]
    assert unlayout(reply.raw_output_contents[0]) == [w + b"!" for w in WORDS]
    codes = struct.unpack("<5q", reply.raw_output_contents[1])
    assert list(codes) == [CODES.get(w.decode(), -1) for w in WORDS]


@pytest.mark.parametrize("form", ["typed", "raw"])
def test_two_dimensional_strings_round_trip(grid: Serving, form: str) -> None:
    flat = [value for row in GRID for value in row]
    request = typed("grid", flat, [3, 2]) if form == "typed" else raw("grid", layout(flat), [3, 2])
    reply = grid.stub.ModelInfer(request, timeout=5)
    (out,) = reply.outputs
    assert (out.name, out.datatype, list(out.shape)) == ("same", "BYTES", [3, 2])
    assert list(unlayout(reply.raw_output_contents[0])) == flat


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (raw("text", b"\x03\x00\x00", [1]), "raw_input_contents[0]: element 0 at byte 0: 3 "
         "byte(s) left, too few for its 4-byte little-endian length"),
        (raw("text", layout([b"cat"]) + b"\x01\x00", [2]), "raw_input_contents[0]: element 1 "
         "at byte 7: 2 byte(s) left"),
        (raw("text", struct.pack("<I", 100) + b"cat", [1]), "raw_input_contents[0]: element 0 "
         "at byte 0: its length says 100 bytes, but 3 are left"),
        (raw("text", layout([b"a", b"b"]), [3]), "raw_input_contents[0]: expected 3 BYTES "
         "element(s) for shape [3]"),
        (raw("text", layout([b"a", b"b"]), [1]), "raw_input_contents[0]: 5 byte(s) left after "
         "the 1 BYTES element(s) of shape [1]"),
        (typed("text", [b"a", b"b"], [3]), "inputs[0].contents.bytes_contents: expected 3 "
         "values for shape [3], got 2"),
        (typed("text", [b"ok", b"\xff\xfe"], [2]), "inputs[0]: element 1 (row-major) is not "
         "valid UTF-8 (invalid start byte at byte 0: b'\\xff\\xfe')"),
        (raw("text", layout([b"ok", b"caf\xe9"]), [2]), "inputs[0]: element 1 (row-major) is "
         "not valid UTF-8"),
        (typed("text", [b"a"], [1, 1]), "inputs[0].shape: input 'text' has shape [dynamic]"),
        (raw("text", b"\x00" * 4, [1], "FP32"), "inputs[0].datatype: input 'text' is BYTES, got "
         "'FP32'"),
        (raw("text", b"", [1], "STRING"), "inputs[0].datatype: unknown datatype 'STRING'"),
    ],
    ids=["short-prefix", "short-second-prefix", "length-past-end", "too-few", "too-many",
         "typed-count", "typed-not-utf8", "raw-not-utf8", "rank", "datatype", "unknown-datatype"],
)  # fmt: skip
def test_bad_string_requests_name_the_field(
    words: Serving, request_: pb.ModelInferRequest, message: str
) -> None:
    stub = words.stub
    with pytest.raises(grpc.RpcError) as caught:
        stub.ModelInfer(request_, timeout=5)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in caught.value.details()
    assert stub.ModelInfer(typed("text", [b"cat"], [1]), timeout=5).outputs


def test_bytes_in_another_contents_field_are_refused(words: Serving) -> None:
    request = typed("text", [], [1])
    request.inputs[0].contents.int_contents.append(1)
    with pytest.raises(grpc.RpcError) as caught:
        words.stub.ModelInfer(request, timeout=5)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "inputs[0].contents: BYTES data belongs in bytes_contents, got int_contents" in (
        caught.value.details()
    )


def test_the_domain_api_names_the_string_input(words: Serving) -> None:
    stub = predictor_grpc.PredictorStub(words.channel)
    described = stub.DescribeModel(predictor.DescribeModelRequest(), timeout=5)
    assert (described.input_name, described.input_dtype) == ("text", "string")
    with pytest.raises(grpc.RpcError) as caught:
        stub.Predict(predictor.PredictRequest(features=[1.0]), timeout=5)
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "(input 'text' is string, not a float type)" in caught.value.details()


TRITON_SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np
    import tritonclient.grpc as triton
    from tritonclient.utils import InferenceServerException
    client = triton.InferenceServerClient(sys.argv[1])
    meta = client.get_model_metadata("foldserve", as_json=True)
    text = triton.InferInput("text", [4], "BYTES")
    text.set_data_from_numpy(np.array([b"cat", "naïve", "", b"bird"], dtype=np.object_))
    result = client.infer("foldserve", [text], outputs=[triton.InferRequestedOutput("loud"),
                                                        triton.InferRequestedOutput("code")])
    bad = triton.InferInput("text", [2], "BYTES")
    bad.set_data_from_numpy(np.array([b"ok", b"\\xff"], dtype=np.object_))
    try:
        client.infer("foldserve", [bad])
        error = None
    except InferenceServerException as exc:
        error = [exc.status(), exc.message()]
    print(json.dumps({
        "inputs": meta["inputs"],
        "loud": [v.decode() for v in result.as_numpy("loud").tolist()],
        "loud_type": type(result.as_numpy("loud")[0]).__name__,
        "code": result.as_numpy("code").tolist(),
        "error": error,
    }))
""")


def test_tritonclient_grpc_sends_and_reads_strings(words: Serving) -> None:
    """tritonclient.grpc in a child process (its protobuf names clash with ours in one)."""
    done = subprocess.run(
        [sys.executable, "-c", TRITON_SCRIPT, f"127.0.0.1:{words.server.running.port}"],
        capture_output=True, text=True, cwd=REPO, env=env(), timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    reply = json.loads(done.stdout)
    assert reply["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": ["-1"]}]
    assert reply["loud"] == ["cat!", "naïve!", "!", "bird!"]
    assert reply["loud_type"] == "bytes"
    assert reply["code"] == [1, -1, -1, 3]
    status, message = reply["error"]
    assert status == "StatusCode.INVALID_ARGUMENT"
    assert message.startswith("inputs[0]: element 1 (row-major) is not valid UTF-8")
