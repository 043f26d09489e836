"""`foldserve.v1.Predictor`: the domain API, one example per call or per stream message."""

from __future__ import annotations

from google.protobuf import struct_pb2

from service._proto.foldserve.v1 import predictor_pb2 as pb
from service.api.calls import answers_in_stream
from service.api.foreign import describe_foreign
from service.api.shift import shift_monitor
from service.api.tensors import check_request_id, features_to_batch
from service.contract import LOGITS, PROBABILITIES
from service.core.call import Call
from service.core.errors import RequestError
from service.core.model import Model
from service.core.monitor import ShiftMonitor
from service.core.repository import ModelRepository

SERVICE = pb.DESCRIPTOR.services_by_name["Predictor"]


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
        served = self._repository.resolve(
            call, request.model_name, request.model_version, "model_name", "model_version"
        )
        model = served.model
        check_request_id(request.request_id, "request_id")
        batch = features_to_batch(request.features, model)
        outputs = served.runner.run(batch, call)
        label = int(outputs[LOGITS][0].argmax())
        return pb.PredictResponse(
            label=label,
            class_name=model.class_labels[label],
            probabilities=outputs[PROBABILITIES][0].tolist(),
            model_name=model.name,
            model_version=model.version,
            request_id=request.request_id,
        )

    @answers_in_stream(_stream_error)
    def PredictStream(self, request: pb.PredictRequest, call: Call) -> pb.PredictStreamResponse:
        prediction = self.Predict(request, call)
        return pb.PredictStreamResponse(request_id=request.request_id, prediction=prediction)

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
