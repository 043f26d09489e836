"""`foldserve.v1.Predictor`: the domain API, one example per call or per stream message.

`Predict` and each `PredictStream` message are the data plane's `infer` of one example for the
model's classifier (`InferRequest.classify`); `DescribeModel` is its `describe`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from foldserve._proto.foldserve.v1 import predictor_pb2 as pb
from foldserve.api.calls import answers_in_stream
from foldserve.api.describe import describe
from foldserve.api.wire import leading_record, parser
from foldserve.core.call import Call
from foldserve.core.dataplane import DataPlane
from foldserve.core.errors import RequestError
from foldserve.core.types import InferInput, InferRequest
from foldserve.core.validate import check_request_id

SERVICE = pb.DESCRIPTOR.services_by_name["Predictor"]
FEATURES = pb.PredictRequest.DESCRIPTOR.fields_by_name["features"].number
MODEL_FIELDS = ("model_name", "model_version")
_LITTLE_F32 = np.dtype("<f4")
_parse_request = parser(pb.PredictRequest)


@dataclass(frozen=True, slots=True)
class PredictInput:
    """A parsed `PredictRequest` and its features as a flat float32 array."""

    message: pb.PredictRequest
    features: np.ndarray


def parse_predict(data: bytes) -> PredictInput:
    """Parse a `PredictRequest` strictly, with its features as numpy.

    When the values arrived as the one packed record that opens the request's bytes (what every
    serializer writes), they are read straight from those bytes: the same float32 values that
    protobuf decoded, without converting each to a Python float and back.
    """
    message = _parse_request(data)
    count = len(message.features)
    where = leading_record(data, FEATURES)
    if where is not None and where[1] == 4 * count:
        # A copy: aligned and writable, as protobuf's values would have been.
        features = np.frombuffer(data, _LITTLE_F32, count, where[0]).astype(np.float32)
    else:
        features = np.array(message.features, np.float32)
    return PredictInput(message, features)


def _stream_error(request: PredictInput, error: RequestError) -> pb.PredictStreamResponse:
    status = error.status
    return pb.PredictStreamResponse(
        request_id=request.message.request_id,
        error=pb.Error(code=status.value, status=status.name, message=error.message),
    )


class PredictorAdapter:
    """Serves the data plane over `foldserve.v1.Predictor`."""

    # Methods whose request bytes are parsed by these instead of a plain strict parse.
    parsers: ClassVar = {"Predict": parse_predict, "PredictStream": parse_predict}

    def __init__(self, plane: DataPlane) -> None:
        self._plane = plane

    def Predict(self, request: PredictInput, call: Call) -> pb.PredictResponse:
        return pb.PredictResponse(**self._prediction(request, call))

    @answers_in_stream(_stream_error)
    def PredictStream(self, request: PredictInput, call: Call) -> pb.PredictStreamResponse:
        # The prediction's fields go straight into the message (no copy of a PredictResponse).
        prediction = self._prediction(request, call)
        return pb.PredictStreamResponse(
            request_id=request.message.request_id, prediction=prediction
        )

    def _prediction(self, request: PredictInput, call: Call) -> dict[str, object]:
        """The fields of `PredictResponse` for one request."""
        message = request.message
        check_request_id(message.request_id, "request_id")
        example = InferInput("", request.features, "FP32", "features")
        infer = InferRequest(
            message.model_name,
            message.model_version,
            (example,),
            id=message.request_id,
            classify=True,
        )
        answer = self._plane.infer(call, infer)
        classification = answer.classification
        label = int(classification.labels[0])  # type: ignore[union-attr]
        return {
            "label": label,
            "class_name": classification.class_labels[label],  # type: ignore[union-attr]
            "probabilities": classification.probabilities[0].tolist(),  # type: ignore[union-attr]
            "model_name": answer.model_name,
            "model_version": answer.model_version,
            "request_id": message.request_id,
        }

    def DescribeModel(
        self, request: pb.DescribeModelRequest, call: Call
    ) -> pb.DescribeModelResponse:
        model, monitor, candidate = self._plane.describe(
            call, request.model_name, request.model_version, MODEL_FIELDS
        )
        return describe(model, monitor, candidate)
