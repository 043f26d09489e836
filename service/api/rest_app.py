"""The V2 REST ASGI application: `rest_app(plane)` routes each HTTP request to `RestAdapter`
(`api/rest.py`) around the data plane's call steps.

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

import inspect
import logging
import time

from foldserve.api.asgi import (
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
from foldserve.api.json_fields import dumps
from foldserve.api.rest import Request, RestAdapter
from foldserve.api.rest_routes import Endpoint, route
from foldserve.core.call import Call
from foldserve.core.dataplane import DataPlane
from foldserve.core.errors import RequestError, Status

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
