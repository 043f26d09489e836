"""How every RPC of our gRPC APIs runs: the gRPC handlers around the adapters' methods.

An adapter is a plain object with one method per RPC, `Method(request, call) -> response`, that
reads decode → data plane → encode and knows no gRPC. `service_handler` builds, from the proto's
service descriptor, the gRPC handler of every method: each starts the data plane's `Call` (the
token, the size limit and admission are the data plane's `begin`), parses the request bytes
strictly, runs the adapter method, maps a `RequestError` to its gRPC status and has the data plane
`finish` the call (metrics, access log).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
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


def new_call(method: str, context: grpc.ServicerContext, in_stream: bool = False) -> Call:
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
        in_stream=in_stream,
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


def _run(
    plane: DataPlane, call: Call, data: bytes, parse: Parse, answer: Answer
) -> tuple[Any, Any, RequestError | None]:
    """(request, response, error) of one admitted call, which the data plane then finishes."""
    request, response, error = None, None, None
    try:
        request = parse(data)
        response = answer(request, call)
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

    def behaviour(data: bytes, context: grpc.ServicerContext) -> Any:
        call = new_call(name, context)
        try:
            plane.begin(call, len(data))
        except RequestError as refused:
            _abort(context, refused)
        _request, response, error = _run(plane, call, data, parse, answer)
        if error is not None:
            _abort(context, error)
        return response

    return behaviour


def stream(
    plane: DataPlane, method: MethodDescriptor, answer: Answer, on_error: OnError, parse: Parse
) -> Callable:
    """The gRPC behaviour of a bidirectional stream whose messages `answer` answers.

    The token and admission are checked once, when the stream opens; each message is then
    checked and answered on its own. Draining refuses a new stream (UNAVAILABLE); one already
    open runs on until the client closes it or the grace period ends.
    """
    name, empty = method.name, parse(b"")

    def behaviour(messages: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[Any]:
        try:
            plane.open_stream(new_call(name, context))
        except RequestError as refused:
            _abort(context, refused)
        try:
            for data in messages:
                call = new_call(name, context, in_stream=True)
                try:
                    plane.begin(call, len(data))
                except RequestError as refused:
                    yield on_error(empty, refused)
                    continue
                request, response, error = _run(plane, call, data, parse, answer)
                yield response if error is None else on_error(request or empty, error)
        finally:
            plane.close_stream()

    return behaviour


def _abort(context: grpc.ServicerContext, error: RequestError) -> None:
    context.abort(GRPC_CODES[error.status], error.message)


def _request_type(method: MethodDescriptor) -> type:
    return message_factory.GetMessageClass(method.input_type)


def service_handler(
    service: ServiceDescriptor, adapter: object, plane: DataPlane
) -> grpc.GenericRpcHandler:
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
    return grpc.method_handlers_generic_handler(service.full_name, handlers)


def method_names(services: tuple[ServiceDescriptor, ...]) -> tuple[str, ...]:
    """Every RPC method name of `services`, in proto order."""
    return tuple(method.name for service in services for method in service.methods)
