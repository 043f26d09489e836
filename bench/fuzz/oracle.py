"""What a correct server must answer: whether a request's bytes are a valid call of a method.

Written from the protocols' and the model's definitions, not from the server's code, so that the
fuzz command and the property tests check the server rather than repeat it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from google.protobuf import message_factory
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import DecodeError, Message
from google.protobuf.unknown_fields import UnknownFieldSet

from foldserve._proto.foldserve.v1 import predictor_pb2
from foldserve._proto.inference import grpc_predict_v2_pb2
from foldserve.core.validate import MAX_REQUEST_ID_CHARS as MAX_ID

SERVICES = (
    predictor_pb2.DESCRIPTOR.services_by_name["Predictor"],
    grpc_predict_v2_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"],
)
METHODS = {f"/{s.full_name}/{m.name}": m for s in SERVICES for m in s.methods}
# What a server may answer to a call that cannot be valid (never OK, INTERNAL or UNKNOWN).
REFUSALS = frozenset(
    {"INVALID_ARGUMENT", "NOT_FOUND", "RESOURCE_EXHAUSTED", "UNIMPLEMENTED", "FAILED_PRECONDITION"}
)
# A request's own `timeout` (µs) that a good call surely meets.
AMPLE_TIMEOUT_US = 10_000_000


@dataclass(frozen=True)
class Served:
    """What the oracle knows of the served model."""

    name: str
    versions: tuple[str, ...]
    input_name: str
    input_shape: tuple[int, ...]
    classes: int
    output_names: tuple[str, ...]
    max_message_bytes: int
    shared_memory: bool = False  # `--shared-memory`: off, every shared memory call is refused


def parse(method: str, data: bytes) -> Message | None:
    """The request as the method's message type, or None when the bytes are no such message
    (including a known field sent with the wrong wire type)."""
    cls = message_factory.GetMessageClass(METHODS[method].input_type)
    try:
        message = cls.FromString(data)
    except (DecodeError, RuntimeError, ValueError):
        return None
    return None if _wrong_wire_type(message) else message


def _wrong_wire_type(message: Message) -> bool:
    known = message.DESCRIPTOR.fields_by_number
    if any(f.field_number in known for f in UnknownFieldSet(message)):
        return True
    for field, value in message.ListFields():
        if field.type != FieldDescriptor.TYPE_MESSAGE:
            continue
        items = (
            value.values()
            if field.message_type.GetOptions().map_entry
            else (value if field.is_repeated else [value])
        )
        if any(isinstance(v, Message) and _wrong_wire_type(v) for v in items):
            return True
    return False


def is_valid(method: str, data: bytes, served: Served) -> bool:
    """Whether `data`, sent to `method`, is a call a correct server answers with OK."""
    if method not in METHODS or len(data) > served.max_message_bytes:
        return False
    message = parse(method, data)
    if message is None:
        return False
    check = _CHECKS.get(METHODS[method].name)
    return check is None or check(message, served)


def _version_ok(version: str, served: Served) -> bool:
    return not version or version in served.versions


def _predict(request, served: Served) -> bool:
    return (
        request.model_name in ("", served.name)
        and _version_ok(request.model_version, served)
        and len(request.request_id) <= MAX_ID
        and len(request.features) == math.prod(served.input_shape)
        and bool(np.isfinite(np.asarray(request.features, np.float32)).all())
    )


def _describe(request, served: Served) -> bool:
    return request.model_name in ("", served.name) and _version_ok(request.model_version, served)


def _named(request, served: Served) -> bool:
    return request.name == served.name and _version_ok(request.version, served)


def _ready(request, served: Served) -> bool:
    """Any named model: one not served (or a version not loaded) is not ready, no error."""
    return bool(request.name)


def _infer(request, served: Served) -> bool:
    if request.model_name != served.name or not _version_ok(request.model_version, served):
        return False
    if len(request.id) > MAX_ID or len(request.inputs) != 1 or not _parameters_ok(request):
        return False
    names = [o.name for o in request.outputs]
    if len(set(names)) != len(names) or not set(names) <= set(served.output_names):
        return False
    return _infer_input(request, served)


def _infer_input(request, served: Served) -> bool:
    tensor = request.inputs[0]
    shape = list(tensor.shape)
    if tensor.name != served.input_name or tensor.datatype != "FP32":
        return False
    if len(shape) != 1 + len(served.input_shape) or shape[0] < 1:
        return False
    if tuple(shape[1:]) != served.input_shape or shape[0] > served.max_message_bytes:
        return False
    count = math.prod(shape)
    raw, typed = list(request.raw_input_contents), tensor.HasField("contents")
    if raw:
        if typed or len(raw) != 1 or len(raw[0]) != 4 * count:
            return False
        values = np.frombuffer(raw[0], dtype="<f4")
    else:
        contents = tensor.contents
        others = [f for f, v in contents.ListFields() if f.name != "fp32_contents" and v]
        if not typed or others or len(contents.fp32_contents) != count:
            return False
        values = np.asarray(contents.fp32_contents, np.float32)
    return bool(np.isfinite(values).all())


def _parameters_ok(request) -> bool:
    """Only Triton's `timeout`, long enough; no tensor parameters (shared memory is off)."""
    if any(t.parameters for t in request.inputs) or any(o.parameters for o in request.outputs):
        return False
    if set(request.parameters) - {"timeout"}:
        return False
    if "timeout" not in request.parameters:
        return True
    timeout = request.parameters["timeout"]
    kind = timeout.WhichOneof("parameter_choice")
    value = getattr(timeout, kind) if kind in ("int64_param", "uint64_param") else None
    return value is not None and value >= AMPLE_TIMEOUT_US


def _repository_index(request, served: Served) -> bool:
    return request.repository_name == ""


def _statistics(request, served: Served) -> bool:
    if not request.name:
        return not request.version
    return _named(request, served)


def _never(request, served: Served) -> bool:
    """Not a valid call of the server under test: one model (`--model`), so no model control;
    shared memory off."""
    return False


def _shared_memory_status(request, served: Served) -> bool:
    # A fuzzer registers no region (its keys name no object on the host): only "all" is found.
    return served.shared_memory and request.name == ""


def _shared_memory_unregister(request, served: Served) -> bool:
    return served.shared_memory  # a name not registered is no error (as in Triton)


_CHECKS = {
    "Predict": _predict,
    "DescribeModel": _describe,
    "ModelReady": _ready,
    "ModelMetadata": _named,
    "ModelConfig": _named,
    "ModelStatistics": _statistics,
    "ModelInfer": _infer,
    "RepositoryIndex": _repository_index,
    "RepositoryModelLoad": _never,
    "RepositoryModelUnload": _never,
    "SystemSharedMemoryStatus": _shared_memory_status,
    "SystemSharedMemoryRegister": _never,  # no object of a fuzzer's keys
    "SystemSharedMemoryUnregister": _shared_memory_unregister,
}
