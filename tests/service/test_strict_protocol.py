"""What gRPC used to let through is refused by our code, with the field named, and counted."""

from __future__ import annotations

import grpc
import numpy as np
import pytest

from foldserve._proto.foldserve.v1 import predictor_pb2 as pb
from foldserve._proto.inference import grpc_predict_v2_pb2 as v2
from tests.service.conftest import Served

PREDICT = "/foldserve.v1.Predictor/Predict"
INFER = "/inference.GRPCInferenceService/ModelInfer"
GOOD = pb.PredictRequest(features=[0.5] * 64).SerializeToString()


def raw_call(served: Served, method: str, data: bytes, **kwargs) -> bytes:
    """Send `data` as the request bytes of `method` (no client-side serialization)."""
    return served.channel.unary_unary(method)(data, timeout=5, **kwargs)


def refusal(served: Served, method: str, data: bytes, **kwargs) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        raw_call(served, method, data, **kwargs)
    return caught.value


def infer_request(**fields) -> v2.ModelInferRequest:
    tensor = v2.ModelInferRequest.InferInputTensor(name="input", datatype="FP32", shape=[1, 64])
    return v2.ModelInferRequest(
        inputs=[tensor], raw_input_contents=[np.zeros(64, np.float32).tobytes()], **fields
    )


@pytest.mark.parametrize(
    ("method", "data", "message"),
    [
        (PREDICT, b"\xff\xff\xff", "request: 3 bytes that are not a valid foldserve.v1.Predict"),
        (PREDICT, GOOD[:-3], "not a valid foldserve.v1.PredictRequest"),
        (INFER, b"\x0a\x05ab", "not a valid inference.ModelInferRequest"),
        # field 2 (request_id, a string) sent as a varint
        (PREDICT, GOOD + b"\x10\x05", "request_id: field 2 sent as varint"),
    ],
)  # fmt: skip
def test_bytes_that_are_no_valid_request_are_invalid_argument(
    served: Served, method: str, data: bytes, message: str
) -> None:
    error = refusal(served, method, data)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in error.details()
    name = method.rsplit("/", 1)[1]
    assert served.refused("foldserve_requests_total", method=name, code="INVALID_ARGUMENT") == 1
    assert raw_call(served, PREDICT, GOOD)  # the server is unharmed


def test_a_wrong_wire_type_inside_a_nested_message_names_the_field(served: Served) -> None:
    request = infer_request(model_name="foldserve")
    tensor = request.inputs[0].SerializeToString() + b"\x08\x01"  # name (field 1) as a varint
    data = v2.ModelInferRequest(model_name="foldserve").SerializeToString()
    data += b"\x2a" + bytes([len(tensor)]) + tensor  # field 5 (inputs), length-delimited
    data += b"\x3a" + bytes([256 % 128 | 128, 2]) + np.zeros(64, np.float32).tobytes()
    error = refusal(served, INFER, data)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "inputs[0].name: field 1 sent as varint" in error.details()


def test_unknown_field_numbers_are_ignored_as_proto3_wants(served: Served) -> None:
    reply = pb.PredictResponse.FromString(raw_call(served, PREDICT, GOOD + b"\xa0\x06\x01"))
    assert reply.class_name


@pytest.mark.parametrize(
    ("method", "message", "field"),
    [
        (INFER, infer_request(), "model_name: required by the V2 protocol"),
        ("/inference.GRPCInferenceService/ModelReady", v2.ModelReadyRequest(), "name: required"),
        (
            "/inference.GRPCInferenceService/ModelMetadata",
            v2.ModelMetadataRequest(version="1"),
            "name: required",
        ),
    ],
)
def test_v2_requests_must_name_their_model(
    served: Served, method: str, message, field: str
) -> None:
    error = refusal(served, method, message.SerializeToString())
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in error.details()


def test_an_oversized_request_is_refused_by_us_and_counted(serve, tiny_model) -> None:
    served = serve(tiny_model, max_message_bytes=1024)
    big = pb.PredictRequest(features=[0.5] * 400).SerializeToString()  # 1,603 bytes
    error = refusal(served, PREDICT, big)
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert f"request: {len(big)} bytes, over the limit of 1024 (--max-message-bytes)" in (
        error.details()
    )
    assert (
        served.refused("foldserve_requests_total", method="Predict", code="RESOURCE_EXHAUSTED") == 1
    )
    huge = b"\x0a" + b"\x00" * 3000  # over twice the limit: gRPC itself refuses it
    assert refusal(served, PREDICT, huge).code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert raw_call(served, PREDICT, GOOD)


def test_a_method_nobody_serves_is_unimplemented_and_counted(served: Served) -> None:
    for method in ("/inference.GRPCInferenceService/CudaSharedMemoryStatus", "/no.Such/Method"):
        error = refusal(served, method, b"")
        assert error.code() == grpc.StatusCode.UNIMPLEMENTED
        assert "is not served here; the services are foldserve.v1.Predictor" in error.details()
    assert served.refused("foldserve_requests_total", method="unknown", code="UNIMPLEMENTED") == 2


def test_a_cancelled_stream_frees_its_slot(serve, tiny_model) -> None:
    import queue
    import time

    from foldserve._proto.foldserve.v1 import predictor_pb2_grpc as pb_grpc

    served = serve(tiny_model, max_concurrent_rpcs=1)
    stub = pb_grpc.PredictorStub(served.channel)
    outbox: queue.Queue = queue.Queue()
    replies = stub.PredictStream(iter(outbox.get, None), timeout=30)
    outbox.put(pb.PredictRequest(features=[0.5] * 64, request_id="a"))
    assert next(replies).request_id == "a"
    assert served.running.gate.inside == 1
    replies.cancel()
    outbox.put(None)
    deadline = time.monotonic() + 5
    while served.running.gate.inside:
        assert time.monotonic() < deadline, "the cancelled stream kept its slot"
        time.sleep(0.01)
    assert stub.Predict(pb.PredictRequest(features=[0.5] * 64), timeout=5).class_name
