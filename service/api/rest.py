"""The Open Inference Protocol (KServe V2) over HTTP/REST, with Triton's binary tensor extension:
`rest_app(plane)` is the ASGI application, the HTTP twin of `api/inference.py`.

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

Each call runs as a gRPC call does (`api/calls.py`): admitted by the data plane as it arrives
(`admit`: the bearer token from the `authorization` header, the drain, the in-flight bound; the
probes `/v2/health/live` and `/ready` pass freely, and readiness answers 503 once a drain has
started), then `begin` (the size limit), decode → data plane → encode, `finish`, `release`. The
data plane's methods run inline on the event loop: a model run takes 20–90 µs, less than handing
it to a thread would. HTTP has no request deadline here (neither V2 nor Triton defines one).
Errors are `{"error": message}` with the status of `HTTP_STATUS`.

Why a bare ASGI callable on uvicorn (httptools, uvloop): `bench/rest_stack.py`, an echo of a
1.3 KB V2 JSON reply, one server process per stack, h2load --h1, 3 rounds (median, min–max), on
a 2-core machine shared with other work: server CPU per call at 1 / 32 calls in flight was 44
(41–46) / 22 (21–23) µs for the bare callable, 55 (53–56) / 34 (34–34) µs for Starlette on the
same uvicorn and 56 (50–59) / 28 (27–30) µs for aiohttp.web on uvloop; calls/s were within
noise of each other (about 8k at 1 in flight, 17k at 32, the load generator's core the limit).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from dataclasses import dataclass
from typing import Any

from foldserve.api.asgi import (
    BINARY,
    ASGIApp,
    Receive,
    Reply,
    Scope,
    Send,
    lifespan,
    peer,
    read_body,
    send_reply,
)
from foldserve.api.inference import PLATFORM, UNLOAD_ACCEPTED
from foldserve.api.json_fields import dumps, expect, load_json
from foldserve.api.rest_routes import Endpoint, route
from foldserve.api.rest_shared_memory import SharedMemoryOperations
from foldserve.api.rest_tensors import HEADER_LENGTH, decode_request, encode_response
from foldserve.api.triton_reports import config_json, statistics_json
from foldserve.core.access import header
from foldserve.core.call import Call
from foldserve.core.dataplane import DataPlane
from foldserve.core.datatypes import datatype_of
from foldserve.core.errors import RequestError, Status, invalid
from foldserve.core.model import Model

log = logging.getLogger(__name__)

PROTOCOL = "http"
# The metrics' method label of a call to no operation, as the gRPC server counts one.
UNKNOWN_METHOD = "unknown"
HTTP_STATUS = {
    Status.INVALID_ARGUMENT: 400,
    Status.FAILED_PRECONDITION: 400,
    Status.UNAUTHENTICATED: 401,
    Status.NOT_FOUND: 404,
    Status.RESOURCE_EXHAUSTED: 429,
    Status.INTERNAL: 500,
    Status.UNIMPLEMENTED: 501,
    Status.UNAVAILABLE: 503,
    Status.DEADLINE_EXCEEDED: 504,
}
TOO_LARGE = 413  # RESOURCE_EXHAUSTED for a body over the size limit (busy: 429)
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
        # As Triton answers: 200 when ready, 400 when not (unknown, failed, unloaded).
        return Reply(dumps({"name": request.name, "ready": ready}), 200 if ready else 400)

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
        _no_parameters(request)
        # Loading reads and checks the files: off the serving loop, which keeps answering.
        await asyncio.to_thread(self._plane.load_model, call, "", request.name)
        return Reply(b"")

    async def RepositoryModelUnload(self, request: Request, call: Call) -> Reply:
        _no_parameters(request, UNLOAD_ACCEPTED)
        await asyncio.to_thread(self._plane.unload_model, call, "", request.name)
        return Reply(b"")


def _no_parameters(request: Request, accepted: frozenset[str] = frozenset()) -> None:
    """Model control takes no parameters here (Triton's `config` and file overrides are not
    implemented): refused, never ignored. `accepted`: those that change nothing here."""
    body = _plain_body(request)
    asked = expect(load_json(body, "body") if body.strip() else {}, dict, "an object", "body")
    given = expect(asked.get("parameters", {}), dict, "an object", "parameters")
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


def rest_app(plane: DataPlane) -> ASGIApp:
    """The V2 REST ASGI application over `plane` (run it with uvicorn, `http="httptools"`)."""
    return RestApp(plane)


class RestApp:
    """The ASGI application: routes each HTTP request to `RestAdapter`, around the data plane's
    `begin` and `finish`."""

    def __init__(self, plane: DataPlane) -> None:
        self._plane = plane
        self._adapter = RestAdapter(plane)
        self._limit = plane.max_message_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "lifespan":
            await lifespan(receive, send)
        # A websocket is not served: returning without accepting it refuses it.

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        found = route(scope["path"])
        if found is None or found[0].verb != scope["method"]:
            if await read_body(scope, receive, self._limit) is not None:
                await send_reply(send, self._unrouted(scope, found))
            return
        endpoint, name, version = found
        headers = [(key.decode("latin-1"), value) for key, value in scope["headers"]]
        try:
            self._plane.admit(endpoint.method, PROTOCOL, headers)
        except RequestError as refused:
            await send_reply(send, _error(refused))
            return
        try:
            started = time.perf_counter()
            body = await read_body(scope, receive, self._limit)
            if body is None:  # the client went away before it sent its request
                return
            call = Call(
                endpoint.method, PROTOCOL, started, None,
                headers=lambda: headers, peer=lambda: peer(scope),
            )  # fmt: skip
            request = Request(name, version, body.data, headers)
            await send_reply(send, await self._answer(call, endpoint, request, body.size))
        finally:
            self._plane.release()

    async def _answer(self, call: Call, endpoint: Endpoint, request: Request, size: int) -> Reply:
        """The reply to an admitted request: begun, answered and finished by the data plane. An
        operation whose work must leave the loop (loading a model) returns an awaitable."""
        try:
            self._plane.begin(call, size)
        except RequestError as refused:
            too_large = refused.status is Status.RESOURCE_EXHAUSTED and size > self._limit
            return _error(refused, TOO_LARGE if too_large else None)
        error, reply = None, None
        try:
            reply = getattr(self._adapter, endpoint.method)(request, call)
            if inspect.isawaitable(reply):
                reply = await reply
        except RequestError as exc:
            error = exc
        except Exception:
            log.exception("%s failed", call.method)
            error = RequestError(Status.INTERNAL, f"{call.method}: internal error")
        self._plane.finish(call, error)
        return reply if error is None else _error(error)

    def _unrouted(self, scope: Scope, found: tuple[Endpoint, str, str] | None) -> Reply:
        """404 for a path that names no operation, 405 for the wrong verb; counted as the gRPC
        server counts a call to an unknown method."""
        self._plane.count_refusal(UNKNOWN_METHOD, Status.UNIMPLEMENTED)
        method, path = scope["method"], scope["path"]
        if found is None:
            message = f"path: no V2 endpoint at {path[:200]!r} (see GET /v2 and /v2/models/...)"
            return Reply(dumps({"error": message}), 404)
        verb = found[0].verb
        message = f"method: {path[:200]!r} answers {verb}, not {method[:20]}"
        return Reply(dumps({"error": message}), 405, headers=((b"allow", verb.encode()),))


def _error(error: RequestError, status: int | None = None) -> Reply:
    return Reply(dumps({"error": error.message}), status or HTTP_STATUS[error.status])
