"""`inference.GRPCInferenceService`: the Open Inference Protocol (KServe V2), as Triton has it."""

from __future__ import annotations

import grpc

from service._proto.inference import grpc_predict_v2_pb2 as pb
from service._proto.inference import grpc_predict_v2_pb2_grpc as pb_grpc
from service.model import OUTPUTS, Model
from service.servicers.calls import Calls, ModelRunner
from service.tensors import FP32, check_model, decode_infer_inputs, requested_outputs
from service.version import VERSION

# Triton's platform name for ONNX models, which its clients know.
PLATFORM = "onnxruntime_onnx"


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    """Serves one loaded model over the V2 protocol.

    Args:
        runner: runs the loaded model.
        calls: shared admission, metrics and status handling.
    """

    def __init__(self, runner: ModelRunner, calls: Calls) -> None:
        self._model = runner.model
        self._runner = runner
        self._calls = calls
        self._metadata = self._model_metadata(runner.model)

    def ServerLive(self, request: pb.ServerLiveRequest, context: grpc.ServicerContext):
        return self._calls.unary(
            "ServerLive", request, context, lambda r, s: pb.ServerLiveResponse(live=True)
        )

    def ServerReady(self, request: pb.ServerReadyRequest, context: grpc.ServicerContext):
        # The gate refuses calls while draining, so a call that gets here is ready.
        return self._calls.unary(
            "ServerReady", request, context, lambda r, s: pb.ServerReadyResponse(ready=True)
        )

    def ModelReady(self, request: pb.ModelReadyRequest, context: grpc.ServicerContext):
        def ready(r: pb.ModelReadyRequest, _start: float) -> pb.ModelReadyResponse:
            check_model(self._model, r.name, r.version, "name", "version")
            return pb.ModelReadyResponse(ready=True)

        return self._calls.unary("ModelReady", request, context, ready)

    def ServerMetadata(self, request: pb.ServerMetadataRequest, context: grpc.ServicerContext):
        return self._calls.unary(
            "ServerMetadata",
            request,
            context,
            lambda r, s: pb.ServerMetadataResponse(name="foldserve", version=VERSION),
        )

    def ModelMetadata(self, request: pb.ModelMetadataRequest, context: grpc.ServicerContext):
        def metadata(r: pb.ModelMetadataRequest, _start: float) -> pb.ModelMetadataResponse:
            check_model(self._model, r.name, r.version, "name", "version")
            return self._metadata

        return self._calls.unary("ModelMetadata", request, context, metadata)

    def ModelInfer(self, request: pb.ModelInferRequest, context: grpc.ServicerContext):
        return self._calls.unary(
            "ModelInfer", request, context, lambda r, start: self._infer(r, start, context)
        )

    def _infer(
        self, request: pb.ModelInferRequest, start: float, context: grpc.ServicerContext
    ) -> pb.ModelInferResponse:
        model = self._model
        check_model(model, request.model_name, request.model_version, "model_name", "model_version")
        batch, raw = decode_infer_inputs(request, model)
        names = requested_outputs(request)
        logits, probabilities = self._runner.run(batch, start, context)
        response = pb.ModelInferResponse(
            model_name=model.name, model_version=model.version, id=request.id
        )
        values = {"logits": logits, "probabilities": probabilities}
        for name in names:
            array = values[name]
            output = response.outputs.add(name=name, datatype=FP32, shape=array.shape)
            # Triton answers raw requests with raw_output_contents, and tritonclient reads only
            # those; typed requests get typed answers.
            if raw:
                response.raw_output_contents.append(array.astype("<f4", copy=False).tobytes())
            else:
                output.contents.fp32_contents.extend(array.ravel().tolist())
        return response

    @staticmethod
    def _model_metadata(model: Model) -> pb.ModelMetadataResponse:
        tensor = pb.ModelMetadataResponse.TensorMetadata
        classes = len(model.class_labels)
        return pb.ModelMetadataResponse(
            name=model.name,
            versions=[model.version],
            platform=PLATFORM,
            inputs=[tensor(name=model.input_name, datatype=FP32, shape=[-1, *model.input_shape])],
            outputs=[tensor(name=name, datatype=FP32, shape=[-1, classes]) for name in OUTPUTS],
        )
