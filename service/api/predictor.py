"""`foldserve.v1.Predictor`: the domain API, one example per call or per stream message."""

from __future__ import annotations

import numpy as np
from google.protobuf import struct_pb2

from service._proto.foldserve.v1 import predictor_pb2 as pb
from service.api.calls import answers_in_stream
from service.api.foreign import describe_foreign
from service.api.shift import shift_monitor
from service.api.tensors import check_request_id, features_to_batch
from service.api.wire import leading_record
from service.contract import LOGITS, PROBABILITIES
from service.core.call import Call
from service.core.errors import RequestError
from service.core.model import Model
from service.core.monitor import ShiftMonitor
from service.core.repository import ModelRepository

SERVICE = pb.DESCRIPTOR.services_by_name["Predictor"]
FEATURES = pb.PredictRequest.DESCRIPTOR.fields_by_name["features"].number
_LITTLE_F32 = np.dtype("<f4")


def features_batch(request: pb.PredictRequest, data: bytes, model: Model) -> np.ndarray:
    """`features` as a [1, *input shape] batch, checked as `features_to_batch` checks.

    When the values arrived as the one packed record that opens the request's bytes (what every
    serializer writes), they are read straight from those bytes: the same float32 values that
    protobuf decoded, without converting each to a Python float and back. Anything else (values
    split over several records, a wrong count, a non-finite value) goes through
    `features_to_batch`, which decodes or refuses it (as it does for a model whose input is not
    float32: one foldserve did not train may take float16 or float64).
    """
    spec = model.input
    count = len(request.features)
    if count == spec.size and spec.dtype == _LITTLE_F32:
        where = leading_record(data, FEATURES)
        if where is not None and where[1] == 4 * count:
            values = np.frombuffer(data, _LITTLE_F32, count, where[0])
            if np.isfinite(values).all():
                # A copy: aligned and writable, as protobuf's values would have been.
                return values.copy().reshape((1, *spec.shape))
    return features_to_batch(request.features, model)


def _struct(value: object) -> struct_pb2.Struct:
    result = struct_pb2.Struct()
    result.update(value)
    return result


def _stream_error(request: pb.PredictRequest, error: RequestError) -> pb.PredictStreamResponse:
    status = error.status
    return pb.PredictStreamResponse(
        request_id=request.request_id,
        error=pb.Error(code=status.value, status=status.name, message=error.message),
    )


class PredictorAdapter:
    """Serves the repository's model over `foldserve.v1.Predictor`."""

    def __init__(self, repository: ModelRepository) -> None:
        self._repository = repository

    def Predict(self, request: pb.PredictRequest, call: Call) -> pb.PredictResponse:
        return pb.PredictResponse(**self._prediction(request, call))

    @answers_in_stream(_stream_error)
    def PredictStream(self, request: pb.PredictRequest, call: Call) -> pb.PredictStreamResponse:
        # The prediction's fields go straight into the message (no copy of a PredictResponse).
        prediction = self._prediction(request, call)
        return pb.PredictStreamResponse(request_id=request.request_id, prediction=prediction)

    def _prediction(self, request: pb.PredictRequest, call: Call) -> dict[str, object]:
        """The fields of `PredictResponse` for one request."""
        served = self._repository.resolve(
            call, request.model_name, request.model_version, "model_name", "model_version"
        )
        model = served.model
        check_request_id(request.request_id, "request_id")
        batch = features_batch(request, call.data, model)
        outputs = served.runner.run(batch, call)
        label = int(outputs[LOGITS][0].argmax())
        return {
            "label": label,
            "class_name": model.class_labels[label],
            "probabilities": outputs[PROBABILITIES][0].tolist(),
            "model_name": model.name,
            "model_version": model.version,
            "request_id": request.request_id,
        }

    def DescribeModel(
        self, request: pb.DescribeModelRequest, call: Call
    ) -> pb.DescribeModelResponse:
        served = self._repository.resolve(
            call, request.model_name, request.model_version, "model_name", "model_version"
        )
        return describe(served.model, served.runner.monitor)


def describe(model: Model, monitor: ShiftMonitor | None = None) -> pb.DescribeModelResponse:
    """`DescribeModel`'s answer for a model: what its file says about it, and its shift
    monitor's live state."""
    meta = model.metadata
    if meta is None:  # a model foldserve did not train
        return describe_foreign(model, monitor)
    return pb.DescribeModelResponse(
        name=model.name,
        version=model.version,
        input_name=model.input.name,
        input_shape=list(model.input.shape),
        input_dtype=meta.input_dtype,
        class_labels=model.class_labels,
        output_names=model.output_names,
        training_metrics=_struct(dict(meta.training_metrics)),
        fold_report=_struct(meta.fold_report.to_json()),
        dataset=meta.dataset,
        arch=meta.arch,
        created=meta.created,
        foldserve_version=meta.foldserve_version,
        sha256=model.sha256,
        opset=model.opset,
        shift=shift_monitor(model, monitor),
    )
