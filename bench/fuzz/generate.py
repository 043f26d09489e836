"""Seeded request bytes for every RPC of both APIs: good calls, calls with a field or two
changed to something odd, and bytes that are barely protobuf at all."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from google.protobuf.message import Message

from foldserve._proto.foldserve.v1 import predictor_pb2 as pb
from foldserve._proto.inference import grpc_predict_v2_pb2 as v2
from foldserve.bench.fuzz.oracle import METHODS, Served

ODD_TEXT = ("", "x", "FP32", "input", "foldserve", "0", "-1", "é", "a" * 2000)
ODD_NUMBERS = (0, -1, 1, 2, 7, 64, 65, 2**31, 2**62, -(2**62))
ODD_FLOATS = (float("nan"), float("inf"), -float("inf"), 3.4e38, -0.0, 1e-45)
INFER = "/inference.GRPCInferenceService/ModelInfer"
PREDICT = "/foldserve.v1.Predictor/Predict"


class Requests:
    """Draws (method, request bytes) pairs from a seeded generator.

    Args:
        served: the model being fuzzed (shapes, names, versions).
        seed: the seed; the same seed draws the same requests.
    """

    def __init__(self, served: Served, seed: int) -> None:
        self.served = served
        self.rng = np.random.default_rng(seed)
        self._methods = sorted(m for m in METHODS if not METHODS[m].client_streaming)

    def draw(self) -> tuple[str, bytes]:
        method = self._methods[self.rng.integers(len(self._methods))]
        kind = self.rng.random()
        if kind < 0.35:
            return method, self.good(method).SerializeToString()
        if kind < 0.8:
            return method, self._mutated(self.good(method)).SerializeToString()
        return method, self._garbled(self.good(method).SerializeToString())

    def good(self, method: str) -> Message:
        """A valid request for `method`."""
        served, rng = self.served, self.rng
        version = served.versions[rng.integers(len(served.versions))] if rng.random() < 0.3 else ""
        name = METHODS[method].name
        if name == "Predict":
            features = rng.normal(size=math.prod(served.input_shape)).astype(np.float32)
            return pb.PredictRequest(
                features=features.tolist(), model_version=version, request_id="r"
            )
        if name == "ModelInfer":
            return self._good_infer(version)
        if name in ("ModelReady", "ModelMetadata", "ModelConfig", "ModelStatistics"):
            return _request(method)(name=served.name, version=version)
        if name == "DescribeModel":
            return pb.DescribeModelRequest(model_version=version)
        return _request(method)()

    def _good_infer(self, version: str) -> v2.ModelInferRequest:
        served, rng = self.served, self.rng
        batch = int(rng.integers(1, 4))
        values = rng.normal(size=(batch, *served.input_shape)).astype(np.float32)
        tensor = v2.ModelInferRequest.InferInputTensor(
            name=served.input_name, datatype="FP32", shape=values.shape
        )
        request = v2.ModelInferRequest(
            model_name=served.name, model_version=version, inputs=[tensor]
        )
        if rng.random() < 0.5:
            request.raw_input_contents.append(values.tobytes())
        else:
            tensor.contents.fp32_contents.extend(values.ravel().tolist())
        if rng.random() < 0.3:
            request.outputs.add(name=served.output_names[rng.integers(len(served.output_names))])
        return request

    def _mutated(self, request: Message) -> Message:
        for _ in range(int(self.rng.integers(1, 3))):
            _MUTATIONS[self.rng.integers(len(_MUTATIONS))](self, request)
        return request

    def _garbled(self, data: bytes) -> bytes:
        rng, choice = self.rng, self.rng.integers(4)
        if choice == 0:
            return rng.bytes(int(rng.integers(0, 64)))
        if choice == 1 and data:
            return data[: int(rng.integers(0, len(data)))]
        if choice == 2:  # a known low field number with a random wire type and payload
            tag = (int(rng.integers(1, 8)) << 3) | int(rng.choice([0, 1, 2, 5]))
            return data + bytes([tag]) + rng.bytes(int(rng.integers(1, 9)))
        flipped = bytearray(data or b"\x00")
        flipped[int(rng.integers(len(flipped)))] ^= 1 << int(rng.integers(8))
        return bytes(flipped)

    def odd_text(self) -> str:
        return ODD_TEXT[self.rng.integers(len(ODD_TEXT))]

    def odd_number(self) -> int:
        return ODD_NUMBERS[self.rng.integers(len(ODD_NUMBERS))]


def _request(method: str) -> type:
    from google.protobuf import message_factory

    return message_factory.GetMessageClass(METHODS[method].input_type)


def _set_text(requests: Requests, request: Message) -> None:
    fields = [f for f in request.DESCRIPTOR.fields if f.type == f.TYPE_STRING and not f.is_repeated]
    if fields:
        field = fields[requests.rng.integers(len(fields))]
        setattr(request, field.name, requests.odd_text())


def _odd_features(requests: Requests, request: Message) -> None:
    rng = requests.rng
    if isinstance(request, pb.PredictRequest):
        values = list(request.features)
        if values and rng.random() < 0.5:
            values[rng.integers(len(values))] = ODD_FLOATS[rng.integers(len(ODD_FLOATS))]
        else:
            values = values[: int(rng.integers(0, len(values) + 1))] + [0.5] * int(rng.integers(3))
        request.ClearField("features")
        request.features.extend(values)
    elif isinstance(request, v2.ModelInferRequest) and request.inputs:
        _odd_tensor(requests, request)


def _odd_tensor(requests: Requests, request: v2.ModelInferRequest) -> None:
    rng, tensor = requests.rng, request.inputs[0]
    choice = rng.integers(6)
    if choice == 0:
        tensor.shape[rng.integers(len(tensor.shape))] = requests.odd_number()
    elif choice == 1:
        tensor.datatype = ("FP16", "FP64", "INT32", "BYTES", "fp32", "")[rng.integers(6)]
    elif choice == 2:
        tensor.contents.int_contents.append(1)
    elif choice == 3 and request.raw_input_contents:
        request.raw_input_contents[0] = request.raw_input_contents[0][: -int(rng.integers(1, 5))]
    elif choice == 4:
        request.inputs.add(name=requests.odd_text(), datatype="FP32", shape=[1])
    else:
        request.outputs.add(name=requests.odd_text())


_MUTATIONS: tuple[Callable[[Requests, Message], None], ...] = (_set_text, _odd_features)
