"""`inference.GRPCInferenceService`: the Open Inference Protocol (KServe V2), as Triton has it.

Each method decodes its request, calls the data plane and encodes the answer.
"""

from __future__ import annotations

from foldserve._proto.inference import grpc_predict_v2_pb2 as pb
from foldserve.api.v2_tensors import decode_request, encode_response
from foldserve.core.call import Call
from foldserve.core.dataplane import DataPlane, required
from foldserve.core.datatypes import datatype_of
from foldserve.core.model import Model

SERVICE = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"]
# Triton's platform name for ONNX models, which its clients know.
PLATFORM = "onnxruntime_onnx"
NAME_FIELDS = ("name", "version")
INFER_FIELDS = ("model_name", "model_version")


class InferenceAdapter:
    """Serves the data plane over the V2 protocol."""

    def __init__(self, plane: DataPlane) -> None:
        self._plane = plane

    def ServerLive(self, request: pb.ServerLiveRequest, call: Call) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=self._plane.server_live(call))

    def ServerReady(self, request: pb.ServerReadyRequest, call: Call) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self._plane.server_ready(call))

    def ServerMetadata(
        self, request: pb.ServerMetadataRequest, call: Call
    ) -> pb.ServerMetadataResponse:
        info = self._plane.server_metadata(call)
        return pb.ServerMetadataResponse(
            name=info.name, version=info.version, extensions=info.extensions
        )

    def ModelReady(self, request: pb.ModelReadyRequest, call: Call) -> pb.ModelReadyResponse:
        self._required(request.name, "name")
        ready = self._plane.model_ready(call, request.name, request.version, NAME_FIELDS)
        return pb.ModelReadyResponse(ready=ready)

    def ModelMetadata(
        self, request: pb.ModelMetadataRequest, call: Call
    ) -> pb.ModelMetadataResponse:
        self._required(request.name, "name")
        model, versions = self._plane.model_metadata(
            call, request.name, request.version, NAME_FIELDS
        )
        return model_metadata(model, versions)

    def ModelInfer(self, request: pb.ModelInferRequest, call: Call) -> pb.ModelInferResponse:
        self._required(request.model_name, "model_name")
        decoded, raw = decode_request(request)
        return encode_response(self._plane.infer(call, decoded), raw)

    def RepositoryIndex(
        self, request: pb.RepositoryIndexRequest, call: Call
    ) -> pb.RepositoryIndexResponse:
        entries = self._plane.repository_index(call, request.repository_name, request.ready)
        index = pb.RepositoryIndexResponse.ModelIndex
        models = [
            index(name=e.name, version=e.version, state=e.state, reason=e.reason) for e in entries
        ]
        return pb.RepositoryIndexResponse(models=models)

    def _required(self, name: str, field: str) -> None:
        required(name, field, self._plane.repository.names)


def model_metadata(model: Model, versions: list[str]) -> pb.ModelMetadataResponse:
    """`ModelMetadata`'s answer for a model: its tensors as its graph has them (-1: a dynamic
    dimension, the batch dimension first)."""
    tensor = pb.ModelMetadataResponse.TensorMetadata
    inputs, outputs = (
        [tensor(name=t.name, datatype=datatype_of(t.dtype).name, shape=t.shown_shape) for t in ts]
        for ts in (model.inputs, model.outputs)
    )
    return pb.ModelMetadataResponse(
        name=model.name, versions=versions, platform=PLATFORM, inputs=inputs, outputs=outputs
    )
