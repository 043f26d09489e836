"""How every RPC of our gRPC APIs runs: the `grpc.aio` handlers around the adapters' methods.

An adapter is a plain object with one method per RPC, `Method(request, call) -> response`, that
reads decode → data plane → encode and knows no gRPC. `ApiHandler` serves, from the proto's
service descriptor, every method of one service. gRPC looks a call's handler up as it accepts the
call, in the task that will run it: that is where the data plane admits it (`DataPlane.admit`:
the token, the drain, the in-flight bound), and the task's end releases it, whether the handler
ran or not. The handler then starts the data plane's `Call` (`begin`: the size limit), parses the
request bytes strictly, runs the adapter method, maps a `RequestError` to its gRPC status and has
the data plane `finish` the call (metrics, access log). Handlers are coroutines on the serving
event loop; the adapter's work runs inline (`server.event_loop`).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from google.protobuf import message_factory
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor

from foldserve.api.wire import parser
from foldserve.core.call import Call
from foldserve.core.dataplane import DataPlane
from foldserve.core.errors import RequestError, Status

log = logging.getLogger(__name__)

GRPC_CODES = {status: grpc.StatusCode[status.name] for status in Status}
PROTOCOL = "grpc"

Answer = Callable[[Any, Call], Any]
Parse = Callable[[bytes], Any]
OnError = Callable[[Any, RequestError], Any]


def new_call(method: str, context: grpc.aio.ServicerContext) -> Call:
    """The data plane's view of a call starting now: its start and deadline as plain numbers,
    its metadata and peer read only when needed."""
    started = time.perf_counter()
    remaining = context.time_remaining()
    # time.monotonic, the clock the core compares deadlines with; None: no deadline.
    deadline = None if remaining is None else time.monotonic() + remaining
    return Call(
        method,
        PROTOCOL,
        started,
        deadline,
        headers=lambda: context.invocation_metadata() or (),
        peer=context.peer,
    )


def answers_in_stream(on_error: OnError) -> Callable[[Answer], Answer]:
    """Mark an adapter method as the per-message answer of a bidirectional stream.

    A `RequestError` for one message becomes `on_error(request, error)`, sent in the stream in its
    place, and the stream goes on.
    """

    def mark(answer: Answer) -> Answer:
        answer.on_error = on_error  # type: ignore[attr-defined]
        return answer

    return mark


async def _run(
    plane: DataPlane, call: Call, data: bytes, parse: Parse, answer: Answer
) -> tuple[Any, Any, RequestError | None]:
    """(request, response, error) of one admitted call, which the data plane then finishes. An
    adapter method whose work must leave the loop (loading a model) returns an awaitable."""
    request, response, error = None, None, None
    try:
        request = parse(data)
        response = answer(request, call)
        if inspect.isawaitable(response):
            response = await response
    except RequestError as exc:
        error = exc
    except Exception:
        log.exception("%s failed", call.method)
        error = RequestError(Status.INTERNAL, f"{call.method}: internal error")
    plane.finish(call, error)
    return request, response, error


def unary(plane: DataPlane, method: MethodDescriptor, answer: Answer, parse: Parse) -> Callable:
    """The gRPC behaviour of a unary method answered by `answer`."""
    name = method.name

    async def behaviour(data: bytes, context: grpc.aio.ServicerContext) -> Any:
        call = new_call(name, context)
        try:
            plane.begin(call, len(data))
        except RequestError as refused:
            await _abort(context, refused)
        _request, response, error = await _run(plane, call, data, parse, answer)
        if error is not None:
            await _abort(context, error)
        return response

    return behaviour


def stream(
    plane: DataPlane, method: MethodDescriptor, answer: Answer, on_error: OnError, parse: Parse
) -> Callable:
    """The gRPC behaviour of a bidirectional stream whose messages `answer` answers.

    The stream is admitted once, when it opens (`ApiHandler`); each message is then checked and
    answered on its own. Draining refuses a new stream (UNAVAILABLE); one already open runs on
    until the client closes it or the grace period ends.
    """
    name, empty = method.name, parse(b"")

    async def behaviour(
        messages: AsyncIterator[bytes], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[Any]:
        async for data in read_ahead(messages):
            call = new_call(name, context)
            try:
                plane.begin(call, len(data))
            except RequestError as refused:
                yield on_error(empty, refused)
                continue
            request, response, error = await _run(plane, call, data, parse, answer)
            yield response if error is None else on_error(request or empty, error)

    return behaviour


async def read_ahead(messages: AsyncIterator[bytes], depth: int = 64) -> AsyncIterator[bytes]:
    """A stream's messages, read by a task of their own up to `depth` ahead: the next message is
    read while this one is answered and its reply written, instead of after."""
    queue: asyncio.Queue = asyncio.Queue(depth)
    end = object()

    async def read() -> None:
        try:
            async for data in messages:
                await queue.put(data)
        except asyncio.CancelledError:  # the stream ended: nobody waits for the end
            raise
        except Exception:
            await queue.put(end)  # then `await reader` raises it to the stream
            raise
        await queue.put(end)

    reader = asyncio.get_running_loop().create_task(read())
    try:
        while (data := await queue.get()) is not end:
            yield data
        await reader  # a read that failed (the client went away) fails the stream
    finally:
        reader.cancel()


async def _abort(context: grpc.aio.ServicerContext, error: RequestError) -> None:
    await context.abort(GRPC_CODES[error.status], error.message)


def _request_type(method: MethodDescriptor) -> type:
    return message_factory.GetMessageClass(method.input_type)


class ApiHandler(grpc.GenericRpcHandler):
    """The handlers of one API service, each admitted by the data plane as gRPC looks it up."""

    def __init__(
        self, service: ServiceDescriptor, plane: DataPlane, handlers: dict[str, Any]
    ) -> None:
        self._plane = plane
        self._handlers = {f"/{service.full_name}/{name}": (name, h) for name, h in handlers.items()}

    @property
    def handlers(self) -> dict[str, grpc.RpcMethodHandler]:
        """Every method's handler by full name, unadmitted (for tools that time handlers
        without gRPC: `bench/call_budget.py`)."""
        return {method: handler for method, (_name, handler) in self._handlers.items()}

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        found = self._handlers.get(handler_call_details.method)
        if found is None:
            return None
        name, handler = found
        metadata = handler_call_details.invocation_metadata or ()
        try:
            self._plane.admit(name, PROTOCOL, metadata)
        except RequestError as refused:
            return refusal(refused)
        task = asyncio.current_task()
        if task is None:  # not on the serving loop: nothing will tell us the call ended
            self._plane.release()
            raise RuntimeError("gRPC looked a handler up outside a task")
        task.add_done_callback(lambda _task: self._plane.release())
        return handler


def refusal(error: RequestError) -> grpc.RpcMethodHandler:
    """A handler that answers any call, unary or streaming, with `error` (already counted)."""

    async def refuse(
        requests: AsyncIterator[Any], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[Any]:
        await _abort(context, error)
        yield None  # never reached: a generator, as gRPC wants for a stream

    return grpc.stream_stream_rpc_method_handler(refuse)


def service_handler(service: ServiceDescriptor, adapter: object, plane: DataPlane) -> ApiHandler:
    """The gRPC handler of every method of `service`, each answered by the adapter's method of
    the same name (streams: marked with `answers_in_stream`). Requests arrive as bytes and are
    parsed strictly, by the adapter's own parser where it has one (`adapter.parsers`)."""
    handlers = {}
    parsers = getattr(adapter, "parsers", {})
    for method in service.methods:
        serialize = message_factory.GetMessageClass(method.output_type).SerializeToString
        answer = getattr(adapter, method.name)
        parse = parsers.get(method.name) or parser(_request_type(method))
        if method.client_streaming and method.server_streaming:
            behaviour = stream(plane, method, answer, answer.on_error, parse)
            handler = grpc.stream_stream_rpc_method_handler(
                behaviour, response_serializer=serialize
            )
        elif not (method.client_streaming or method.server_streaming):
            handler = grpc.unary_unary_rpc_method_handler(
                unary(plane, method, answer, parse), response_serializer=serialize
            )
        else:
            raise NotImplementedError(f"{method.full_name}: one-way streams are not served")
        handlers[method.name] = handler
    return ApiHandler(service, plane, handlers)


def method_names(services: tuple[ServiceDescriptor, ...]) -> tuple[str, ...]:
    """Every RPC method name of `services`, in proto order."""
    return tuple(method.name for service in services for method in service.methods)
