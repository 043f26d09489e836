"""What the load generator sends: prebuilt gRPC request bodies (and V2 REST ones, built in
`rest_workloads`), and a check that they work.

A gRPC request body is a sequence of length-prefixed messages (1 byte "not compressed", 4 bytes
big-endian length, the serialized message). The load generator sends these bytes as they are,
so it does no protobuf work of its own; a stream's body is many messages back to back, all sent
at once, and the stream ends when every answer has come.

The load generator sees HTTP only: a gRPC error is an HTTP 200 whose trailers say so. So every
workload is first sent once through grpcio with the same bytes (`reply_bytes` fails on any
status but OK, or an answer that does not parse), and the size of its reply is what each later
call must bring back: fewer bytes means some calls failed.
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc
import numpy as np

from foldserve._proto.foldserve.v1 import predictor_pb2 as pb
from foldserve._proto.inference import grpc_predict_v2_pb2 as v2
from foldserve.bench.suite import rest_workloads as rest
from foldserve.contract.layout import MODEL_NAME
from foldserve.core.model import Classifier

PREDICT, INFER_TYPED, INFER_RAW, STREAM = "Predict", "ModelInfer typed", "ModelInfer raw", "stream"
REST_JSON, REST_BINARY = "REST JSON", "REST binary"
GRPC_UNARY = (PREDICT, INFER_TYPED, INFER_RAW)
REST = (REST_JSON, REST_BINARY)
UNARY = (*GRPC_UNARY, *REST)
GRPC, HTTP = "grpc", "http"
GRPC_HEADERS = ("content-type: application/grpc", "te: trailers")
# h2load asks for gzip unless told otherwise; every reply is measured as sent, uncompressed.
IDENTITY = "accept-encoding: identity"
CHECK_TIMEOUT_SECONDS = 30.0
FRAME_HEADER = 5


class WorkloadError(RuntimeError):
    """A workload does not get a well-formed OK answer from a server; the message says why."""


@dataclass(frozen=True)
class Workload:
    """One kind of call: the method's path and its request, `messages` of them per call.

    A gRPC workload's `message` is one serialized request; an HTTP one's is the whole body, sent
    with its `headers`.
    """

    name: str
    path: str
    message: bytes
    messages: int = 1
    protocol: str = GRPC
    headers: tuple[str, ...] = ()

    @property
    def streaming(self) -> bool:
        return self.name == STREAM

    @property
    def body(self) -> bytes:
        """The request body on the wire: every message, length-prefixed (gRPC), or the body."""
        if self.protocol == HTTP:
            return self.message
        return frame(self.message) * self.messages

    @property
    def request_headers(self) -> tuple[str, ...]:
        """The headers sent with every call, as "name: value"."""
        return GRPC_HEADERS if self.protocol == GRPC else self.headers


def frame(message: bytes) -> bytes:
    """One gRPC message as it travels: not compressed, 4-byte big-endian length, the bytes."""
    return b"\x00" + len(message).to_bytes(4, "big") + message


def example(spec: Classifier, seed: int = 0) -> np.ndarray:
    """A fixed example with the model's input shape (digits-like values, 0-16)."""
    return np.random.default_rng(seed).uniform(0, 16, spec.example_size).astype(np.float32)


def unary_workloads(spec: Classifier) -> dict[str, Workload]:
    """Predict, and ModelInfer with typed and with raw contents, each carrying one example."""
    values = example(spec)
    predict = pb.PredictRequest(features=values.tolist())
    tensor = {"name": spec.input.name, "datatype": "FP32", "shape": [1, *spec.example_shape]}
    # The V2 protocol requires the model's name.
    contents = {"fp32_contents": values}
    typed = v2.ModelInferRequest(
        model_name=MODEL_NAME,
        inputs=[v2.ModelInferRequest.InferInputTensor(**tensor, contents=contents)],
    )
    raw = v2.ModelInferRequest(
        model_name=MODEL_NAME,
        inputs=[v2.ModelInferRequest.InferInputTensor(**tensor)],
        raw_input_contents=[values.astype("<f4").tobytes()],
    )
    infer = "/inference.GRPCInferenceService/ModelInfer"
    return {
        PREDICT: Workload(PREDICT, "/foldserve.v1.Predictor/Predict", predict.SerializeToString()),
        INFER_TYPED: Workload(INFER_TYPED, infer, typed.SerializeToString()),
        INFER_RAW: Workload(INFER_RAW, infer, raw.SerializeToString()),
    }


def rest_workloads(spec: Classifier) -> dict[str, Workload]:
    """V2 REST infer with a JSON body and with the binary extension, each carrying one example
    (shape [1, *example shape]); the binary one asks for the classifier's outputs as bytes."""
    values = example(spec).reshape(1, *spec.example_shape)
    outputs = [spec.logits, *([spec.probabilities] if spec.probabilities else [])]
    binary, header = rest.binary_body(spec.input.name, values, outputs)
    path = rest.infer_path()
    json_headers = (f"content-type: {rest.JSON_TYPE}", IDENTITY)
    binary_headers = (
        f"content-type: {rest.BINARY_TYPE}",
        f"{rest.HEADER_LENGTH}: {header}",
        IDENTITY,
    )
    body = rest.json_body(spec.input.name, values)
    return {
        REST_JSON: Workload(REST_JSON, path, body, protocol=HTTP, headers=json_headers),
        REST_BINARY: Workload(REST_BINARY, path, binary, protocol=HTTP, headers=binary_headers),
    }


def stream_workload(spec: Classifier, messages: int) -> Workload:
    """A PredictStream call of `messages` examples."""
    request = pb.PredictRequest(features=example(spec).tolist()).SerializeToString()
    return Workload(STREAM, "/foldserve.v1.Predictor/PredictStream", request, messages)


def _parse(workload: Workload, reply: bytes) -> None:
    if workload.streaming:
        answer = pb.PredictStreamResponse.FromString(reply)
        if answer.HasField("error"):
            raise WorkloadError(f"{workload.name}: the stream answered {answer.error.message!r}")
    elif workload.name == PREDICT:
        if not pb.PredictResponse.FromString(reply).probabilities:
            raise WorkloadError(f"{workload.name}: the reply has no probabilities")
    elif not v2.ModelInferResponse.FromString(reply).outputs:
        raise WorkloadError(f"{workload.name}: the reply has no outputs")


def reply_bytes(target: str, workload: Workload) -> int:
    """Send `workload` once to `target` (host:port); return the bytes on the wire of one call's
    replies (an HTTP workload's: its body's).

    Raises:
        WorkloadError: a status other than OK (200), a reply that does not parse, or (a stream)
            not one reply per message.
    """
    if workload.protocol == HTTP:
        return _http_reply_bytes(target, workload)
    identity = {"request_serializer": None, "response_deserializer": None}
    with grpc.insecure_channel(target) as channel:
        try:
            if workload.streaming:
                call = channel.stream_stream(workload.path, **identity)
                requests = iter([workload.message] * workload.messages)
                replies = list(call(requests, timeout=CHECK_TIMEOUT_SECONDS, wait_for_ready=True))
            else:
                call = channel.unary_unary(workload.path, **identity)
                replies = [
                    call(workload.message, timeout=CHECK_TIMEOUT_SECONDS, wait_for_ready=True)
                ]
        except grpc.RpcError as exc:
            raise WorkloadError(f"{workload.name}: {exc.code().name}: {exc.details()}") from None
    if len(replies) != workload.messages:
        raise WorkloadError(
            f"{workload.name}: {len(replies)} replies to {workload.messages} messages"
        )
    try:
        for reply in replies:
            _parse(workload, reply)
    except Exception as exc:  # a DecodeError, or one of ours
        raise WorkloadError(f"{workload.name}: bad reply: {exc}") from None
    return sum(FRAME_HEADER + len(reply) for reply in replies)


def _http_reply_bytes(target: str, workload: Workload) -> int:
    host, _, port = target.rpartition(":")
    headers = dict(header.split(": ", 1) for header in workload.headers)
    try:
        answer = rest.post(host, int(port), workload.path, workload.body, headers)
        rest.check_reply(*answer)
    except rest.RestError as exc:
        raise WorkloadError(f"{workload.name}: {exc}") from None
    except OSError as exc:
        raise WorkloadError(f"{workload.name}: {exc}") from None
    return len(answer[2])
