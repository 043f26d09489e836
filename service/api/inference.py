"""`inference.GRPCInferenceService`: the Open Inference Protocol (KServe V2), as Triton has it.

Each method decodes its request, calls the data plane and encodes the answer.
"""

from __future__ import annotations

import asyncio

from foldserve._proto.inference import grpc_predict_v2_pb2 as pb
from foldserve.api.calls import answers_in_stream
from foldserve.api.triton_reports import statistics_message
from foldserve.api.v2_tensors import decode_request, encode_response
from foldserve.core.call import Call
from foldserve.core.dataplane import DataPlane, required
from foldserve.core.datatypes import datatype_of
from foldserve.core.errors import RequestError, invalid
from foldserve.core.model import Model

SERVICE = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"]
# Triton's platform name for ONNX models, which its clients know.
PLATFORM = "onnxruntime_onnx"
NAME_FIELDS = ("name", "version")
INFER_FIELDS = ("model_name", "model_version")


def _stream_error(
    request: pb.ModelInferRequest, error: RequestError
) -> pb.ModelStreamInferResponse:
    return pb.ModelStreamInferResponse(
        error_message=f"{error.status.name}: {error.message}",
        infer_response=pb.ModelInferResponse(
            model_name=request.model_name, model_version=request.model_version, id=request.id
        ),
    )


def _refuse_parameters(parameters, accepted: frozenset[str] = frozenset()) -> None:
    """An unload takes no parameters here: refused, never ignored. `accepted`: those that change
    nothing here."""
    names = sorted(set(parameters) - accepted)
    if names:
        raise invalid(f"parameters: {names} not implemented by foldserve for an unload")


def _value(parameter: pb.ModelRepositoryParameter) -> object:
    """A model control parameter's value, whichever of its types it has."""
    chosen = parameter.WhichOneof("parameter_choice")
    return None if chosen is None else getattr(parameter, chosen)


# Triton's unload also unloads the ensembles a model is part of; foldserve serves none, so the
# parameter changes nothing (tritonclient always sends it).
UNLOAD_ACCEPTED = frozenset({"unload_dependents"})


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
        return encode_response(self._plane.infer(call, decode_request(request)))

    @answers_in_stream(_stream_error)
    def ModelStreamInfer(
        self, request: pb.ModelInferRequest, call: Call
    ) -> pb.ModelStreamInferResponse:
        return pb.ModelStreamInferResponse(infer_response=self.ModelInfer(request, call))

    def ModelConfig(self, request: pb.ModelConfigRequest, call: Call) -> pb.ModelConfigResponse:
        self._required(request.name, "name")
        config = self._plane.model_config(call, request.name, request.version, NAME_FIELDS)
        return pb.ModelConfigResponse(config=config)

    def ModelStatistics(
        self, request: pb.ModelStatisticsRequest, call: Call
    ) -> pb.ModelStatisticsResponse:
        stats = self._plane.model_statistics(call, request.name, request.version, NAME_FIELDS)
        return statistics_message(stats)

    async def RepositoryModelLoad(
        self, request: pb.RepositoryModelLoadRequest, call: Call
    ) -> pb.RepositoryModelLoadResponse:
        parameters = {name: _value(p) for name, p in request.parameters.items()}
        # Loading reads and checks the files (or adapts): off the serving loop, which keeps
        # answering.
        load = self._plane.load_model
        await asyncio.to_thread(load, call, request.repository_name, request.model_name, parameters)
        return pb.RepositoryModelLoadResponse()

    async def RepositoryModelUnload(
        self, request: pb.RepositoryModelUnloadRequest, call: Call
    ) -> pb.RepositoryModelUnloadResponse:
        _refuse_parameters(request.parameters, UNLOAD_ACCEPTED)
        unload = self._plane.unload_model
        await asyncio.to_thread(unload, call, request.repository_name, request.model_name)
        return pb.RepositoryModelUnloadResponse()

    def SystemSharedMemoryStatus(
        self, request: pb.SystemSharedMemoryStatusRequest, call: Call
    ) -> pb.SystemSharedMemoryStatusResponse:
        regions = self._plane.shared_memory_status(call, request.name)
        status = pb.SystemSharedMemoryStatusResponse.RegionStatus
        return pb.SystemSharedMemoryStatusResponse(
            regions={
                r.name: status(name=r.name, key=r.key, offset=r.offset, byte_size=r.byte_size)
                for r in regions
            }
        )

    def SystemSharedMemoryRegister(
        self, request: pb.SystemSharedMemoryRegisterRequest, call: Call
    ) -> pb.SystemSharedMemoryRegisterResponse:
        r = request
        self._plane.shared_memory_register(call, r.name, r.key, r.offset, r.byte_size)
        return pb.SystemSharedMemoryRegisterResponse()

    def SystemSharedMemoryUnregister(
        self, request: pb.SystemSharedMemoryUnregisterRequest, call: Call
    ) -> pb.SystemSharedMemoryUnregisterResponse:
        self._plane.shared_memory_unregister(call, request.name)
        return pb.SystemSharedMemoryUnregisterResponse()

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
