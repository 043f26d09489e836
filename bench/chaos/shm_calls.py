"""The calls of the `shm` rows: V2 requests whose input is in a region, the shared memory RPCs,
and the misuses that must each be refused naming their field."""

from __future__ import annotations

import json
from pathlib import Path

import grpc

from foldserve._proto.inference import grpc_predict_v2_pb2 as v2
from foldserve._proto.inference import grpc_predict_v2_pb2_grpc as v2_grpc
from foldserve.bench.http_client import CODES, HttpConnection
from foldserve.contract.layout import MODEL_NAME

FIELDS = ("parameters.shared_memory", "byte_size", "offset", "key")  # what a message must name


Output = v2.ModelInferRequest.InferRequestedOutputTensor


def shm_request(
    spec, region: str, rows: int, offset: int = 0, size: int | None = None,
    outputs: tuple[Output, ...] = (),
) -> v2.ModelInferRequest:  # fmt: skip
    """A ModelInfer request of `rows` examples read from `region` (at `offset`, `size` bytes:
    by default the tensor's)."""
    tensor = v2.ModelInferRequest.InferInputTensor(
        name=spec.input.name, datatype="FP32", shape=[rows, *spec.example_shape]
    )
    features = 1
    for dim in spec.example_shape:
        features *= dim
    tensor.parameters["shared_memory_region"].string_param = region
    tensor.parameters["shared_memory_byte_size"].int64_param = (
        rows * features * 4 if size is None else size
    )
    if offset:
        tensor.parameters["shared_memory_offset"].int64_param = offset
    return v2.ModelInferRequest(model_name=MODEL_NAME, inputs=[tensor], outputs=list(outputs))


def inline_twin(request: v2.ModelInferRequest, data: bytes) -> v2.ModelInferRequest:
    """The same request with `data` sent in it instead of read from a region."""
    twin = v2.ModelInferRequest()
    twin.CopyFrom(request)
    twin.inputs[0].ClearField("parameters")
    twin.raw_input_contents.append(data)
    return twin


class ShmClient:
    """The shared memory RPCs and calls, over one gRPC connection, for `model`'s input."""

    def __init__(self, serving, model: Path) -> None:
        from foldserve.core.loading import load_model

        self.spec = load_model(model).require_classifier()
        self.features = 1
        for dim in self.spec.example_shape:
            self.features *= dim
        self.serving = serving
        self._channel = grpc.aio.insecure_channel(serving.target("grpc"))
        self.stub = v2_grpc.GRPCInferenceServiceStub(self._channel)

    async def _status(self, method, request) -> tuple[str, str]:
        try:
            await method(request, timeout=30)
        except grpc.aio.AioRpcError as exc:
            return exc.code().name, exc.details() or ""
        return "OK", ""

    async def register(self, name: str, key: str, size: int, offset: int = 0):
        ask = v2.SystemSharedMemoryRegisterRequest(
            name=name, key=key, offset=offset, byte_size=size
        )
        return await self._status(self.stub.SystemSharedMemoryRegister, ask)

    async def unregister(self, name: str):
        ask = v2.SystemSharedMemoryUnregisterRequest(name=name)
        return await self._status(self.stub.SystemSharedMemoryUnregister, ask)

    async def infer(self, request: v2.ModelInferRequest) -> tuple[str, str]:
        return await self._status(self.stub.ModelInfer, request)

    async def answers_equal(self, region: str, data: bytes, rows: int) -> bool:
        """Whether a call reading `region` is answered as the same call sending `data`."""
        request = shm_request(self.spec, region, rows)
        read = await self.stub.ModelInfer(request, timeout=30)
        sent = await self.stub.ModelInfer(inline_twin(request, data), timeout=30)
        return list(read.raw_output_contents) == list(sent.raw_output_contents)

    async def same_as_inline(self, made, region: str, rows: int) -> bool:
        return await self.answers_equal(region, made.read(made.size), rows)

    async def close(self) -> None:
        await self._channel.close()


def _named(status: str, message: str) -> bool:
    return status == "INVALID_ARGUMENT" and any(field in message for field in FIELDS)


async def bad_calls(client: ShmClient, serving, objects: dict) -> dict[str, tuple[bool, str]]:
    """Every misuse, over gRPC and REST: (refused INVALID_ARGUMENT naming its field, message)."""
    spec, size, rows = client.spec, objects["in"].size, 16
    small = Output(name=spec.logits)
    small.parameters["shared_memory_region"].string_param = "small"
    small.parameters["shared_memory_byte_size"].int64_param = 40
    grpc_calls = {
        "offset past the region": shm_request(spec, "in", rows, offset=size),
        "size past the region": shm_request(spec, "in", rows, offset=8),
        "negative offset": shm_request(spec, "in", rows, offset=-8),
        "huge size": shm_request(spec, "in", rows, size=2**62),
        "size not the tensor's": shm_request(spec, "in", rows, size=size - 4),
        "output region too small": shm_request(spec, "in", rows, outputs=(small,)),
    }
    answers = {f"{name}, grpc": await client.infer(req) for name, req in grpc_calls.items()}
    key = objects["in"].key
    answers["register past the object, grpc"] = await client.register("x", key, 2**40)
    answers["register offset past the object, grpc"] = await client.register("x", key, 8, 2**40)
    http = HttpConnection("127.0.0.1", serving.http_port)
    try:
        for name in ("offset past the region", "size past the region", "huge size"):
            answers[f"{name}, http"] = await _rest(http, grpc_calls[name])
        body = json.dumps({"key": key, "offset": -1, "byte_size": 8}).encode()
        status, text = await http.request(
            "POST", "/v2/systemsharedmemory/region/x/register", body,
            {"content-type": "application/json"},
        )  # fmt: skip
        answers["register negative offset, http"] = (CODES.get(status, str(status)), _error(text))
    finally:
        await http.close()
    return {name: (_named(*answer), answer[1]) for name, answer in answers.items()}


async def _rest(http: HttpConnection, request: v2.ModelInferRequest) -> tuple[str, str]:
    tensor = request.inputs[0]
    parameters = {
        key: value.string_param if value.HasField("string_param") else value.int64_param
        for key, value in tensor.parameters.items()
    }
    given = {"name": tensor.name, "datatype": tensor.datatype, "shape": list(tensor.shape)}
    body = json.dumps({"inputs": [{**given, "parameters": parameters}]})
    path = f"/v2/models/{request.model_name}/infer"
    status, text = await http.request(
        "POST", path, body.encode(), {"content-type": "application/json"}
    )
    return CODES.get(status, str(status)), _error(text)


def _error(text: bytes) -> str:
    try:
        return str(json.loads(text).get("error", ""))
    except ValueError:
        return text.decode(errors="replace")
