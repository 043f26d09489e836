"""Property-based: arbitrary requests for every RPC of both APIs get an answer that keeps the
contract (the oracle of service/tools/fuzz decides what is valid), and good calls keep answering
correctly. Bounded example counts: this runs in `make test`; `foldserve fuzz` does long runs."""

from __future__ import annotations

import math

import grpc
import numpy as np
import pytest
from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from foldserve._proto.foldserve.v1 import predictor_pb2 as pb
from foldserve.bench.fuzz.oracle import METHODS, REFUSALS, Served, is_valid
from foldserve.bench.fuzz.run import describe, verdict
from tests.service.conftest import Served as Running

# Values that land near the edges of validity, per field name, beside arbitrary ones.
HINTS = {
    "name": st.sampled_from(["foldserve", "input", "logits", "probabilities", "", "x"]),
    "model_name": st.sampled_from(["foldserve", "", "other"]),
    "version": st.sampled_from(["", "20250101T000000Z", "7"]),
    "model_version": st.sampled_from(["", "20250101T000000Z", "7"]),
    "datatype": st.sampled_from(["FP32", "FP64", "INT8", "BYTES", ""]),
    "shape": st.sampled_from([[1, 64], [2, 64], [1, 63], [0, 64], [64], [-1, 64], [2**40, 64]]),
    "features": st.one_of(
        st.lists(st.floats(width=32), min_size=64, max_size=64),
        st.lists(st.floats(width=32, allow_nan=False), max_size=70),
    ),
    "fp32_contents": st.lists(st.floats(width=32, allow_nan=False), max_size=130),
    "raw_input_contents": st.lists(
        st.one_of(
            st.just(np.zeros(64, np.float32).tobytes()),
            st.just(np.ones(128, np.float32).tobytes()),
            st.binary(max_size=300),
        ),
        max_size=2,
    ),
}
SCALARS = {
    FieldDescriptor.TYPE_STRING: st.text(max_size=12),
    FieldDescriptor.TYPE_BYTES: st.binary(max_size=40),
    FieldDescriptor.TYPE_BOOL: st.booleans(),
    FieldDescriptor.TYPE_FLOAT: st.floats(width=32),
    FieldDescriptor.TYPE_DOUBLE: st.floats(),
    FieldDescriptor.TYPE_INT32: st.integers(-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_INT64: st.integers(-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT32: st.integers(0, 2**32 - 1),
    FieldDescriptor.TYPE_UINT64: st.integers(0, 2**64 - 1),
}


def _field(field: FieldDescriptor, depth: int) -> st.SearchStrategy | None:
    if field.name in HINTS:
        return HINTS[field.name]
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        if field.message_type.GetOptions().map_entry or depth > 2:
            return None
        inner = _message(field.message_type, depth + 1)
        return st.lists(inner, max_size=2) if field.is_repeated else inner
    scalar = SCALARS.get(field.type)
    if scalar is None:
        return None
    return st.lists(scalar, max_size=3) if field.is_repeated else scalar


def _message(descriptor: Descriptor, depth: int = 0) -> st.SearchStrategy:
    cls = message_factory.GetMessageClass(descriptor)
    fields = {f.name: s for f in descriptor.fields if (s := _field(f, depth)) is not None}
    present = st.fixed_dictionaries({}, optional=fields)
    return present.map(lambda values: _build(cls, values))


def _build(cls: type, values: dict) -> object:
    message = cls()
    for name, value in values.items():
        target = getattr(message, name)
        if isinstance(value, list):
            target.extend(value)
        elif hasattr(value, "SerializeToString"):
            target.CopyFrom(value)
        else:
            setattr(message, name, value)
    return message


def _bytes(method: str) -> st.SearchStrategy[bytes]:
    structured = _message(METHODS[method].input_type).map(lambda m: m.SerializeToString())
    # A low (known) field number with any wire type after a valid message: a wrong wire type.
    tagged = st.tuples(
        structured,
        st.integers(1, 8),
        st.sampled_from([0, 1, 2, 5]),
        st.binary(min_size=1, max_size=9),
    ).map(lambda t: t[0] + bytes([(t[1] << 3) | t[2]]) + t[3])
    return st.one_of(structured, structured, tagged, st.binary(max_size=120))


@pytest.fixture(scope="module")
def served_model(shared_server: Running) -> Served:
    return describe(shared_server.channel, max_message_bytes=4 * 1024 * 1024)


@pytest.fixture(scope="module")
def good_answer(shared_server: Running) -> tuple[pb.PredictRequest, pb.PredictResponse]:
    request = pb.PredictRequest(features=np.linspace(-1, 1, 64).tolist(), request_id="g")
    return request, shared_server.channel.unary_unary(
        "/foldserve.v1.Predictor/Predict",
        request_serializer=pb.PredictRequest.SerializeToString,
        response_deserializer=pb.PredictResponse.FromString,
    )(request, timeout=5)


def _status(channel: grpc.Channel, method: str, data: bytes) -> str:
    try:
        channel.unary_unary(method)(data, timeout=5)
    except grpc.RpcError as exc:
        return exc.code().name
    return "OK"


UNARY = sorted(m for m in METHODS if not METHODS[m].client_streaming)


@pytest.mark.parametrize("method", UNARY, ids=[m.rsplit("/", 1)[1] for m in UNARY])
def test_every_answer_keeps_the_contract(
    method: str, shared_server: Running, served_model: Served, good_answer
) -> None:
    request, expected = good_answer

    @settings(
        max_examples=60, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck)
    )
    @given(data=_bytes(method))
    def check(data: bytes) -> None:
        status = _status(shared_server.channel, method, data)
        assert status != "DEADLINE_EXCEEDED", "hang"
        why = verdict(status, is_valid(method, data, served_model))
        assert why is None, f"{data.hex()}: {why}"
        reply = pb.PredictResponse.FromString(
            shared_server.channel.unary_unary("/foldserve.v1.Predictor/Predict")(
                request.SerializeToString(), timeout=5
            )
        )
        assert reply == expected

    check()


def test_every_stream_message_is_answered_in_place(
    shared_server: Running, served_model: Served
) -> None:
    method = "/foldserve.v1.Predictor/PredictStream"
    messages = st.lists(_bytes("/foldserve.v1.Predictor/Predict"), min_size=1, max_size=6)

    @settings(
        max_examples=40, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck)
    )
    @given(batch=messages)
    def check(batch: list[bytes]) -> None:
        stream = shared_server.channel.stream_stream(
            method, response_deserializer=pb.PredictStreamResponse.FromString
        )
        replies = list(stream(iter(batch), timeout=10))
        assert len(replies) == len(batch)
        for data, reply in zip(batch, replies, strict=True):
            valid = is_valid("/foldserve.v1.Predictor/Predict", data, served_model)
            if valid:
                assert reply.WhichOneof("result") == "prediction"
                assert math.isclose(sum(reply.prediction.probabilities), 1, rel_tol=1e-4)
            else:
                assert reply.WhichOneof("result") == "error", data.hex()
                assert reply.error.status in REFUSALS

    check()
