"""What the load generator sends: prebuilt gRPC request bodies, and a check that they work.

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
from foldserve.contract.layout import MODEL_NAME
from foldserve.core.model import Classifier

PREDICT, INFER_TYPED, INFER_RAW, STREAM = "Predict", "ModelInfer typed", "ModelInfer raw", "stream"
UNARY = (PREDICT, INFER_TYPED, INFER_RAW)
CHECK_TIMEOUT_SECONDS = 30.0
FRAME_HEADER = 5


class WorkloadError(RuntimeError):
    """A workload does not get a well-formed OK answer from a server; the message says why."""


@dataclass(frozen=True)
class Workload:
    """One kind of call: the method's path and its request, `messages` of them per call."""

    name: str
    path: str
    message: bytes
    messages: int = 1

    @property
    def streaming(self) -> bool:
        return self.name == STREAM

    @property
    def body(self) -> bytes:
        """The request body on the wire: every message, length-prefixed."""
        return frame(self.message) * self.messages


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
    """Send `workload` once through grpcio; return the bytes on the wire of one call's replies.

    Raises:
        WorkloadError: a status other than OK, a reply that does not parse, or (a stream) not
            one reply per message.
    """
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
