"""`foldserve.v1.Predictor`: the domain API, one example per call or per stream message."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
from google.protobuf import struct_pb2

from service._proto.foldserve.v1 import predictor_pb2, predictor_pb2_grpc
from service.errors import ServiceError
from service.model import Model
from service.servicers.calls import Calls, ModelRunner
from service.tensors import check_model, features_to_batch


def _struct(value: dict) -> struct_pb2.Struct:
    result = struct_pb2.Struct()
    result.update(value)
    return result


class PredictorServicer(predictor_pb2_grpc.PredictorServicer):
    """Serves one loaded model.

    Args:
        runner: runs the loaded model.
        calls: shared admission, metrics and status handling.
    """

    def __init__(self, runner: ModelRunner, calls: Calls) -> None:
        self._model = runner.model
        self._runner = runner
        self._calls = calls
        self._description = self._describe(runner.model)

    def Predict(
        self, request: predictor_pb2.PredictRequest, context: grpc.ServicerContext
    ) -> predictor_pb2.PredictResponse:
        return self._calls.unary(
            "Predict", request, context, lambda r, start: self._classify(r, start, context)
        )

    def PredictStream(
        self,
        request_iterator: Iterator[predictor_pb2.PredictRequest],
        context: grpc.ServicerContext,
    ) -> Iterator[predictor_pb2.PredictStreamResponse]:
        def answer(request: predictor_pb2.PredictRequest, start: float):
            prediction = self._classify(request, start, context)
            return predictor_pb2.PredictStreamResponse(
                request_id=request.request_id, prediction=prediction
            )

        def error(request: predictor_pb2.PredictRequest, exc: ServiceError):
            return predictor_pb2.PredictStreamResponse(
                request_id=request.request_id,
                error=predictor_pb2.Error(
                    code=exc.code.value[0], status=exc.code.name, message=exc.message
                ),
            )

        return self._calls.stream("PredictStream", request_iterator, context, answer, error)

    def DescribeModel(
        self, request: predictor_pb2.DescribeModelRequest, context: grpc.ServicerContext
    ) -> predictor_pb2.DescribeModelResponse:
        def describe(r: predictor_pb2.DescribeModelRequest, _start: float):
            check_model(self._model, r.model_name, r.model_version, "model_name", "model_version")
            return self._description

        return self._calls.unary("DescribeModel", request, context, describe)

    def _classify(
        self, request: predictor_pb2.PredictRequest, start: float, context: grpc.ServicerContext
    ) -> predictor_pb2.PredictResponse:
        model = self._model
        if request.model_name or request.model_version:
            check_model(
                model, request.model_name, request.model_version, "model_name", "model_version"
            )
        batch = features_to_batch(request.features, model)
        logits, probabilities = self._runner.run(batch, start, context)
        label = int(logits[0].argmax())
        return predictor_pb2.PredictResponse(
            label=label,
            class_name=model.class_labels[label],
            probabilities=probabilities[0].tolist(),
            model_name=model.name,
            model_version=model.version,
            request_id=request.request_id,
        )

    @staticmethod
    def _describe(model: Model) -> predictor_pb2.DescribeModelResponse:
        meta = model.metadata
        return predictor_pb2.DescribeModelResponse(
            name=model.name,
            version=model.version,
            input_name=model.input_name,
            input_shape=list(model.input_shape),
            input_dtype=meta["foldserve.input_dtype"],
            class_labels=model.class_labels,
            output_names=model.output_names,
            training_metrics=_struct(model.training_metrics),
            fold_report=_struct(model.fold_report),
            dataset=meta["foldserve.dataset"],
            arch=meta["foldserve.arch"],
            created=meta["foldserve.created"],
            foldserve_version=model.foldserve_version,
            sha256=model.sha256,
            opset=model.opset,
        )
