"""The Open Inference Protocol (KServe V2) over HTTP/REST, with Triton's binary tensor extension:
`RestAdapter` is the HTTP twin of `api/inference.py`.

| verb | path | operation |
| --- | --- | --- |
| GET | `/v2` | ServerMetadata |
| GET | `/v2/health/live` | ServerLive |
| GET | `/v2/health/ready` | ServerReady |
| GET | `/v2/models/{name}[/versions/{version}]` | ModelMetadata |
| GET | `/v2/models/{name}[/versions/{version}]/ready` | ModelReady |
| POST | `/v2/models/{name}[/versions/{version}]/infer` | ModelInfer |
| GET | `/v2/models/{name}[/versions/{version}]/config` | ModelConfig (Triton's) |
| GET | `/v2/models[/{name}[/versions/{version}]]/stats` | ModelStatistics (Triton's) |
| POST | `/v2/repository/index` | RepositoryIndex (Triton's) |
| POST | `/v2/repository/models/{name}/load` | RepositoryModelLoad (Triton's) |
| POST | `/v2/repository/models/{name}/unload` | RepositoryModelUnload (Triton's) |
| GET, POST | `/v2/systemsharedmemory/...` | SystemSharedMemory* (`api/rest_shared_memory.py`) |

The ASGI application around it, and the life of each HTTP call: `api/rest_app.py`.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from foldserve.api.asgi import (
    BINARY,
    Reply,
)
from foldserve.api.inference import PLATFORM, UNLOAD_ACCEPTED
from foldserve.api.json_fields import dumps, expect, load_json
from foldserve.api.rest_shared_memory import SharedMemoryOperations
from foldserve.api.rest_tensors import HEADER_LENGTH, decode_request, encode_response
from foldserve.api.triton_reports import config_json, statistics_json
from foldserve.core.access import header
from foldserve.core.call import Call
from foldserve.core.dataplane import DataPlane
from foldserve.core.datatypes import datatype_of
from foldserve.core.errors import invalid
from foldserve.core.model import Model

log = logging.getLogger(__name__)

FIELDS = ("model_name", "model_version")  # how messages name the URL's model and version
HEADER_BYTES = HEADER_LENGTH.encode()


@dataclass(frozen=True)
class Request:
    """What an operation reads of an HTTP request: the model and version the URL names, the
    body, and the headers as (lower-case name, value) pairs."""

    name: str
    version: str
    body: bytes
    headers: list[tuple[str, bytes]]


def _json(value: Any) -> Reply:
    return Reply(dumps(value))


class RestAdapter(SharedMemoryOperations):
    """Serves the data plane over V2 REST: one method per operation, named as over gRPC."""

    def __init__(self, plane: DataPlane) -> None:
        self._plane = plane

    def ServerLive(self, request: Request, call: Call) -> Reply:
        return _json({"live": self._plane.server_live(call)})

    def ServerReady(self, request: Request, call: Call) -> Reply:
        ready = self._plane.server_ready(call)
        return Reply(dumps({"ready": ready}), 200 if ready else 503)

    def ServerMetadata(self, request: Request, call: Call) -> Reply:
        info = self._plane.server_metadata(call)
        extensions = list(info.extensions)
        return _json({"name": info.name, "version": info.version, "extensions": extensions})

    def ModelReady(self, request: Request, call: Call) -> Reply:
        ready = self._plane.model_ready(call, request.name, request.version, FIELDS)
        answer: dict[str, Any] = {"name": request.name, "ready": ready}
        if ready:
            return _json(answer)
        # As Triton answers: 400 when not ready (unknown, failed, unloaded), with our error field.
        version = f" version {request.version!r}" if request.version else ""
        answer["error"] = f"model_name: model {request.name!r}{version} is not ready"
        return Reply(dumps(answer), 400)

    def ModelMetadata(self, request: Request, call: Call) -> Reply:
        model, versions = self._plane.model_metadata(call, request.name, request.version, FIELDS)
        return _json(model_metadata(model, versions))

    def ModelInfer(self, request: Request, call: Call) -> Reply:
        body = _plain_body(request)
        decoded, encoding = decode_request(
            body, _header_length(request), request.name, request.version
        )
        reply, length = encode_response(self._plane.infer(call, decoded), encoding)
        if length is None:
            return Reply(reply)
        return Reply(reply, content_type=BINARY, headers=((HEADER_BYTES, b"%d" % length),))

    def ModelConfig(self, request: Request, call: Call) -> Reply:
        config = self._plane.model_config(call, request.name, request.version, FIELDS)
        return _json(config_json(config))

    def ModelStatistics(self, request: Request, call: Call) -> Reply:
        stats = self._plane.model_statistics(call, request.name, request.version, FIELDS)
        return _json(statistics_json(stats))

    def RepositoryIndex(self, request: Request, call: Call) -> Reply:
        body = _plain_body(request)
        asked = expect(load_json(body, "body") if body.strip() else {}, dict, "an object", "body")
        ready = expect(asked.get("ready", False), bool, "a boolean", "ready")
        entries = self._plane.repository_index(call, "", ready)
        return _json([{"name": e.name, "version": e.version, "state": e.state, "reason": e.reason}
                      for e in entries])  # fmt: skip

    async def RepositoryModelLoad(self, request: Request, call: Call) -> Reply:
        parameters = _parameters(request)
        # Loading reads and checks the files (or adapts): off the serving loop, which keeps
        # answering.
        await asyncio.to_thread(self._plane.load_model, call, "", request.name, parameters)
        return Reply(b"")

    async def RepositoryModelUnload(self, request: Request, call: Call) -> Reply:
        _no_parameters(request, UNLOAD_ACCEPTED)
        await asyncio.to_thread(self._plane.unload_model, call, "", request.name)
        return Reply(b"")


def _parameters(request: Request) -> dict:
    """A model control request's `parameters` (the body may be empty)."""
    body = _plain_body(request)
    asked = expect(load_json(body, "body") if body.strip() else {}, dict, "an object", "body")
    return expect(asked.get("parameters", {}), dict, "an object", "parameters")


def _no_parameters(request: Request, accepted: frozenset[str] = frozenset()) -> None:
    """An unload takes no parameters here: refused, never ignored. `accepted`: those that
    change nothing here."""
    given = _parameters(request)
    if set(given) - accepted:
        raise invalid(f"parameters: {sorted(set(given) - accepted)} not implemented by foldserve")


def model_metadata(model: Model, versions: list[str]) -> dict[str, Any]:
    """`ModelMetadata`'s answer for a model: its tensors as its graph has them (-1: a dynamic
    dimension, the batch dimension first)."""
    tensors = [
        [{"name": t.name, "datatype": datatype_of(t.dtype).name, "shape": list(t.shown_shape)}
         for t in ts]
        for ts in (model.inputs, model.outputs)
    ]  # fmt: skip
    return {
        "name": model.name,
        "versions": versions,
        "platform": PLATFORM,
        "inputs": tensors[0],
        "outputs": tensors[1],
    }


def _plain_body(request: Request) -> bytes:
    encoding = header(request.headers, "content-encoding")
    if encoding is not None and encoding.strip().lower() not in ("", "identity"):
        raise invalid(f"content-encoding: {encoding[:40]!r} is not served; send the body as is")
    return request.body


def _header_length(request: Request) -> int | None:
    """Triton's `Inference-Header-Content-Length`: where the JSON ends and binary data starts."""
    text = header(request.headers, HEADER_LENGTH)
    if text is None:
        return None
    text = text.strip()
    if not (text.isascii() and text.isdigit()):
        raise invalid(f"{HEADER_LENGTH}: {text[:40]!r} is not a number of bytes")
    length = int(text)
    if length > len(request.body):
        raise invalid(f"{HEADER_LENGTH}: {length} bytes, but the body has {len(request.body)}")
    return length
