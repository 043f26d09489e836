"""`inference.GRPCInferenceService`: the Open Inference Protocol (KServe V2), as Triton has it."""

from __future__ import annotations

from service._proto.inference import grpc_predict_v2_pb2 as pb
from service.api.datatypes import datatype_of
from service.api.graph_tensors import decode_graph_inputs, encode_graph_outputs, shown_shape
from service.api.tensors import (
    FP32,
    check_request_id,
    decode_infer_inputs,
    encode_infer_outputs,
    requested_outputs,
)
from service.core.call import Call
from service.core.errors import invalid, not_found
from service.core.model import Model
from service.core.repository import ModelRepository
from service.defaults import SERVER_NAME
from service.version import VERSION

SERVICE = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"]
# Triton's platform name for ONNX models, which its clients know.
PLATFORM = "onnxruntime_onnx"
# Triton's model states in RepositoryIndex.
READY = "READY"
UNAVAILABLE = "UNAVAILABLE"


class InferenceAdapter:
    """Serves the repository's model over the V2 protocol."""

    def __init__(self, repository: ModelRepository) -> None:
        self._repository = repository

    def ServerLive(self, request: pb.ServerLiveRequest, call: Call) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    def ServerReady(self, request: pb.ServerReadyRequest, call: Call) -> pb.ServerReadyResponse:
        # The gate refuses calls while draining, so a call that gets here is ready.
        return pb.ServerReadyResponse(ready=True)

    def ModelReady(self, request: pb.ModelReadyRequest, call: Call) -> pb.ModelReadyResponse:
        self._resolve(call, request.name, request.version, "name", "version")
        return pb.ModelReadyResponse(ready=True)

    def ServerMetadata(
        self, request: pb.ServerMetadataRequest, call: Call
    ) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(name=SERVER_NAME, version=VERSION)

    def ModelMetadata(
        self, request: pb.ModelMetadataRequest, call: Call
    ) -> pb.ModelMetadataResponse:
        served = self._resolve(call, request.name, request.version, "name", "version")
        versions = [v.version for v in self._repository.versions]
        return model_metadata(served.model, versions)

    def ModelInfer(self, request: pb.ModelInferRequest, call: Call) -> pb.ModelInferResponse:
        served = self._resolve(
            call, request.model_name, request.model_version, "model_name", "model_version"
        )
        model = served.model
        check_request_id(request.id, "id")
        if model.foreign is not None:
            return self._infer_graph(request, served, call)
        batch, raw = decode_infer_inputs(request, model)
        names = requested_outputs(request, model)
        outputs = served.runner.run(batch, call)
        response = pb.ModelInferResponse(
            model_name=model.name, model_version=model.version, id=request.id
        )
        encode_infer_outputs(response, outputs, names, raw)
        return response

    def _infer_graph(
        self, request: pb.ModelInferRequest, served, call: Call
    ) -> pb.ModelInferResponse:
        """`ModelInfer` of a model foldserve did not train: any inputs and outputs its graph has."""
        model = served.model
        feeds, raw = decode_graph_inputs(request, model.foreign.graph)
        names = requested_outputs(request, model)
        outputs = served.runner.run_graph(feeds, names, call)
        response = pb.ModelInferResponse(
            model_name=model.name, model_version=model.version, id=request.id
        )
        encode_graph_outputs(response, outputs, names, raw)
        return response

    def RepositoryIndex(
        self, request: pb.RepositoryIndexRequest, call: Call
    ) -> pb.RepositoryIndexResponse:
        if request.repository_name:
            raise not_found(
                f"repository_name: unknown repository {request.repository_name!r}; this server "
                "has one, named ''"
            )
        index = pb.RepositoryIndexResponse.ModelIndex
        repository = self._repository
        models = [
            index(name=repository.name, version=v.version, state=READY) for v in repository.versions
        ]
        if not request.ready:
            models += [
                index(name=repository.name, version=r.version, state=UNAVAILABLE, reason=r.reason)
                for r in repository.refused
            ]
        return pb.RepositoryIndexResponse(models=models)

    def _resolve(self, call: Call, name: str, version: str, name_field: str, version_field: str):
        # The V2 protocol makes the model name required (the Predictor API does not).
        if not name:
            raise invalid(
                f"{name_field}: required by the V2 protocol; this server serves "
                f"{self._repository.name!r}"
            )
        return self._repository.resolve(call, name, version, name_field, version_field)


def model_metadata(model: Model, versions: list[str]) -> pb.ModelMetadataResponse:
    """`ModelMetadata`'s answer for a model: its tensors, batch dimension first (-1); for a model
    foldserve did not train, as its graph has them (-1: a dynamic dimension)."""
    tensor = pb.ModelMetadataResponse.TensorMetadata
    if model.foreign is not None:
        graph = model.foreign.graph
        inputs, outputs = (
            [
                tensor(name=t.name, datatype=datatype_of(t.dtype).name, shape=shown_shape(t))
                for t in ts
            ]
            for ts in (graph.inputs, graph.outputs)
        )
        return pb.ModelMetadataResponse(
            name=model.name, versions=versions, platform=PLATFORM, inputs=inputs, outputs=outputs
        )
    return pb.ModelMetadataResponse(
        name=model.name,
        versions=versions,
        platform=PLATFORM,
        inputs=[tensor(name=model.input.name, datatype=FP32, shape=[-1, *model.input.shape])],
        outputs=[tensor(name=o.name, datatype=FP32, shape=[-1, *o.shape]) for o in model.outputs],
    )
