"""`inference.GRPCInferenceService`: the Open Inference Protocol (KServe V2), as Triton has it."""

from __future__ import annotations

from service._proto.inference import grpc_predict_v2_pb2 as pb
from service.api.calls import Call
from service.api.tensors import FP32, decode_infer_inputs, encode_infer_outputs, requested_outputs
from service.core.model import Model
from service.core.runner import ModelRunner
from service.defaults import SERVER_NAME
from service.version import VERSION

SERVICE = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"]
# Triton's platform name for ONNX models, which its clients know.
PLATFORM = "onnxruntime_onnx"


class InferenceAdapter:
    """Serves the runner's model over the V2 protocol."""

    def __init__(self, runner: ModelRunner) -> None:
        self._runner = runner
        self._metadata = model_metadata(runner.model)

    def ServerLive(self, request: pb.ServerLiveRequest, call: Call) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    def ServerReady(self, request: pb.ServerReadyRequest, call: Call) -> pb.ServerReadyResponse:
        # The gate refuses calls while draining, so a call that gets here is ready.
        return pb.ServerReadyResponse(ready=True)

    def ModelReady(self, request: pb.ModelReadyRequest, call: Call) -> pb.ModelReadyResponse:
        self._runner.resolve(request.name, request.version, "name", "version")
        return pb.ModelReadyResponse(ready=True)

    def ServerMetadata(
        self, request: pb.ServerMetadataRequest, call: Call
    ) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(name=SERVER_NAME, version=VERSION)

    def ModelMetadata(
        self, request: pb.ModelMetadataRequest, call: Call
    ) -> pb.ModelMetadataResponse:
        self._runner.resolve(request.name, request.version, "name", "version")
        return self._metadata

    def ModelInfer(self, request: pb.ModelInferRequest, call: Call) -> pb.ModelInferResponse:
        model = self._runner.resolve(
            request.model_name, request.model_version, "model_name", "model_version"
        )
        batch, raw = decode_infer_inputs(request, model)
        names = requested_outputs(request, model)
        outputs = self._runner.run(batch, call.started, call.deadline)
        response = pb.ModelInferResponse(
            model_name=model.name, model_version=model.version, id=request.id
        )
        encode_infer_outputs(response, outputs, names, raw)
        return response


def model_metadata(model: Model) -> pb.ModelMetadataResponse:
    """`ModelMetadata`'s answer for a model: its tensors, batch dimension first (-1)."""
    tensor = pb.ModelMetadataResponse.TensorMetadata
    return pb.ModelMetadataResponse(
        name=model.name,
        versions=[model.version],
        platform=PLATFORM,
        inputs=[tensor(name=model.input.name, datatype=FP32, shape=[-1, *model.input.shape])],
        outputs=[tensor(name=o.name, datatype=FP32, shape=[-1, *o.shape]) for o in model.outputs],
    )
