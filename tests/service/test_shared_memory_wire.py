"""System shared memory on the wire, where tritonclient cannot go: malformed register bodies, the
wrong verbs, parameters of the wrong type, data given both ways, raw entries miscounted; and the
token, the metrics and the reply layout that come with the data plane."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from multiprocessing import shared_memory
from pathlib import Path

import grpc
import numpy as np
import pytest

from foldserve._proto.inference import grpc_predict_v2_pb2 as pb
from foldserve._proto.inference import grpc_predict_v2_pb2_grpc as pb_grpc
from tests.service.conftest import Served, ServeFactory
from tests.service.foreign_files import write_masked_model

TOKEN = "shm-token"
AUTH = {"authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def region() -> Iterator[shared_memory.SharedMemory]:
    """A 512-byte object, unlinked at the end."""
    found = shared_memory.SharedMemory(create=True, size=512)
    yield found
    found.close()
    found.unlink()


def call(served: Served, verb: str, path: str, body: object = None, **headers: str):
    """(status, parsed JSON) of a REST call; `body` a JSON value, or bytes sent as they are."""
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    url = f"http://127.0.0.1:{served.running.http_port}{path}"
    request = urllib.request.Request(url, data=data, method=verb, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        with error:
            return error.code, json.loads(error.read())


REGISTER = "/v2/systemsharedmemory/region/r/register"
BAD_REGISTERS = [
    (b"{", 400, "body: not valid JSON"),
    ([], 400, "body: expected an object"),
    ({"offset": 0, "byte_size": 8}, 400, "key: expected a shared memory object name, got null"),
    ({"key": "/x", "byte_size": "8"}, 400, "byte_size: expected an integer, got a string"),
    ({"key": "/x", "offset": 1.5, "byte_size": 8}, 400, "offset: expected an integer, got a"),
    ({"key": "/x", "byte_size": 0}, 400, "byte_size: expected an integer >= 1, got 0"),
]


@pytest.mark.parametrize(("body", "status", "words"), BAD_REGISTERS, ids=str)
def test_register_bodies_are_read_strictly(
    serve: ServeFactory, tiny_model_path: Path, body: object, status: int, words: str
) -> None:
    served = serve(tiny_model_path, shared_memory=True)
    got, answer = call(served, "POST", REGISTER, body)
    assert got == status and words in answer["error"], answer


def test_routes_verbs_and_names(serve: ServeFactory, tiny_model_path: Path, region) -> None:
    served = serve(tiny_model_path, shared_memory=True)
    assert call(served, "POST", "/v2/systemsharedmemory/status")[0] == 405
    assert call(served, "GET", "/v2/systemsharedmemory/unregister")[0] == 405
    status, answer = call(
        served, "POST", "/v2/systemsharedmemory/register", {"key": "/x", "byte_size": 8}
    )
    assert status == 400 and answer["error"].startswith("name: required")
    status, answer = call(served, "GET", "/v2/systemsharedmemory/region/r/status")
    assert status == 404 and answer["error"].startswith("name: no shared memory region 'r'")
    body = {"key": f"/{region.name}", "offset": 16, "byte_size": 64}
    assert call(served, "POST", REGISTER, body) == (200, {})
    expected = [{"name": "r", "key": f"/{region.name}", "offset": 16, "byte_size": 64}]
    assert call(served, "GET", "/v2/systemsharedmemory/region/r/status") == (200, expected)
    assert call(served, "POST", "/v2/systemsharedmemory/region/r/unregister") == (200, {})
    assert call(served, "POST", "/v2/systemsharedmemory/region/r/unregister") == (200, {})
    assert call(served, "GET", "/v2/systemsharedmemory/status") == (200, [])


def _tensor(**parameters) -> dict:
    return {"name": "input", "shape": [2, 64], "datatype": "FP32", "parameters": parameters}


BAD_INFERS = [
    ({**_tensor(shared_memory_region="r", shared_memory_byte_size=512), "data": [0] * 128},
     "inputs[0].data: data given both in the request and in shared memory"),
    (_tensor(shared_memory_byte_size=512),
     "inputs[0].parameters.shared_memory_region: expected the name of a registered region, "
     "got none"),
    (_tensor(shared_memory_region=5, shared_memory_byte_size=512),
     "inputs[0].parameters.shared_memory_region: expected the name of a registered region, "
     "got 5"),
    (_tensor(shared_memory_region="r"),
     "inputs[0].parameters.shared_memory_byte_size: expected a number of bytes (an integer >= 0), "
     "got none"),
    (_tensor(shared_memory_region="r", shared_memory_byte_size=512.0),
     "inputs[0].parameters.shared_memory_byte_size: expected a number of bytes (an integer >= 0), "
     "got 512.0"),
    (_tensor(shared_memory_region="r", shared_memory_byte_size=True),
     "inputs[0].parameters.shared_memory_byte_size: expected a number of bytes (an integer >= 0), "
     "got True"),
]  # fmt: skip


@pytest.mark.parametrize(("tensor", "message"), BAD_INFERS, ids=lambda v: str(v)[:60])
def test_bad_tensor_parameters_over_rest(
    serve: ServeFactory, tiny_model_path: Path, region, tensor: dict, message: str
) -> None:
    served = serve(tiny_model_path, shared_memory=True)
    served.running.plane.shared_memory.register("r", f"/{region.name}", 0, 512)
    status, answer = call(served, "POST", "/v2/models/foldserve/infer", {"inputs": [tensor]})
    assert (status, answer["error"]) == (400, message)


def _shared(tensor, region: str, size: int, offset: int = 0) -> None:
    tensor.parameters["shared_memory_region"].string_param = region
    tensor.parameters["shared_memory_byte_size"].int64_param = size
    if offset:
        tensor.parameters["shared_memory_offset"].int64_param = offset


def _masked_request(x_shared: bool = True) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="foldserve")
    request.inputs.add(name="x", datatype="FP32", shape=[1, 4])
    request.inputs.add(name="mask", datatype="BOOL", shape=[1, 4])
    if x_shared:
        _shared(request.inputs[0], "r", 16)
    return request


def _error(stub: pb_grpc.GRPCInferenceServiceStub, request: pb.ModelInferRequest):
    with pytest.raises(grpc.RpcError) as caught:
        stub.ModelInfer(request, timeout=10)
    return caught.value.code(), caught.value.details()


def test_grpc_requests_and_replies(serve: ServeFactory, tmp_path: Path, region) -> None:
    """Raw entries only for inputs not in shared memory; every reply raw, with an empty entry
    for each output in shared memory; data given twice refused."""
    served = serve(write_masked_model(tmp_path / "model.onnx"), shared_memory=True)
    stub = pb_grpc.GRPCInferenceServiceStub(served.channel)
    stub.SystemSharedMemoryRegister(
        pb.SystemSharedMemoryRegisterRequest(name="r", key=f"/{region.name}", byte_size=512)
    )
    np.ndarray(4, np.float32, region.buf)[:] = [1, 2, 3, 4]
    mask = np.array([True, False, True, True])
    raw = _masked_request()
    raw.raw_input_contents.append(mask.tobytes())
    _shared(raw.outputs.add(name="out"), "r", 16, 256)
    raw.outputs.add(name="count")
    reply = stub.ModelInfer(raw, timeout=10)
    assert list(reply.raw_output_contents) == [b"", np.array([3], "<i8").tobytes()]
    assert reply.outputs[0].parameters["shared_memory_offset"].int64_param == 256
    assert np.ndarray(4, np.float32, region.buf, 256).tolist() == [1, 0, 3, 4]
    typed = _masked_request()
    typed.inputs[1].contents.bool_contents.extend(mask.tolist())
    reply = stub.ModelInfer(typed, timeout=10)
    assert reply.raw_output_contents[1] == np.array([3], "<i8").tobytes()
    twice = _masked_request()
    twice.raw_input_contents.extend([np.zeros(4, np.float32).tobytes(), mask.tobytes()])
    code, details = _error(stub, twice)
    assert code is grpc.StatusCode.INVALID_ARGUMENT
    assert details.startswith("raw_input_contents: expected 1 entries (one per input not in shared")
    both = _masked_request()
    both.inputs[0].contents.fp32_contents.extend([0.0] * 4)
    both.inputs[1].contents.bool_contents.extend(mask.tolist())
    assert _error(stub, both)[1] == (
        "inputs[0].contents: data given both in contents and in shared memory"
    )
    double = _masked_request()
    double.inputs[0].parameters["shared_memory_offset"].double_param = 1.0
    double.raw_input_contents.append(mask.tobytes())
    assert "shared_memory_offset: expected a number of bytes" in _error(stub, double)[1]


def test_token_and_metrics_come_with_the_data_plane(
    serve: ServeFactory, tiny_model_path: Path, region
) -> None:
    served = serve(tiny_model_path, shared_memory=True, auth_token=TOKEN)
    body = {"key": f"/{region.name}", "byte_size": 512}
    assert call(served, "POST", REGISTER, body)[0] == 401
    assert call(served, "POST", REGISTER, body, **AUTH) == (200, {})
    stub = pb_grpc.GRPCInferenceServiceStub(served.channel)
    metadata = tuple(AUTH.items())
    status = stub.SystemSharedMemoryStatus(pb.SystemSharedMemoryStatusRequest(), metadata=metadata)
    assert status.regions["r"].byte_size == 512
    requests = "foldserve_requests_total"
    assert served.refused(requests, method="SystemSharedMemoryRegister", code="OK") == 1
    assert served.refused(requests, method="SystemSharedMemoryStatus", code="OK") == 1
    assert (
        served.refused(requests, method="SystemSharedMemoryRegister", code="UNAUTHENTICATED") == 1
    )
