"""How every RPC of our APIs runs, and the gRPC handlers that run them.

An API adapter is a plain object with one method per RPC, `Method(request, call) -> response`,
that reads as decode → core → encode and knows no gRPC. `service_handler` builds, from the proto's
service descriptor, the gRPC handler of every method; `Calls` wraps each adapter method with what
every call shares, in this order: the bearer token (when set), the message size limit, admission
(the drain gate and the in-flight bound), strict parsing of the request bytes, then the adapter;
around all of it the in-flight gauge, per-method metrics, mapping a `RequestError` to its gRPC
status, and the access log. Each refusal is counted like any other answer.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import message_factory
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor

from service.api.access import AccessLog, TokenCheck
from service.api.wire import parser
from service.core.call import Call
from service.core.errors import RequestError, Status
from service.core.gate import Gate
from service.core.repository import ModelRepository
from service.metrics import VersionMetrics

log = logging.getLogger(__name__)

GRPC_CODES = {status: grpc.StatusCode[status.name] for status in Status}

Answer = Callable[[Any, Call], Any]
OnError = Callable[[Any, RequestError], Any]


def start_call(context: grpc.ServicerContext, data: bytes = b"") -> Call:
    """The core's view of a call starting now: its start and its deadline as plain numbers, and
    the request's bytes."""
    started = time.perf_counter()
    remaining = context.time_remaining()
    # time.monotonic, the clock the core compares deadlines with; None: no deadline.
    return Call(started, None if remaining is None else time.monotonic() + remaining, data)


def answers_in_stream(on_error: OnError) -> Callable[[Answer], Answer]:
    """Mark an adapter method as the per-message answer of a bidirectional stream.

    A `RequestError` for one message becomes `on_error(request, error)`, sent in the stream in its
    place, and the stream goes on.
    """

    def mark(answer: Answer) -> Answer:
        answer.on_error = on_error  # type: ignore[attr-defined]
        return answer

    return mark


@dataclass(frozen=True)
class CallPolicy:
    """What every call of our APIs must pass before its adapter runs.

    Attributes:
        max_message_bytes: the largest request message accepted.
        token: the bearer-token check, None when the APIs are open.
        access_log: where one line per call goes, None when off.
    """

    max_message_bytes: int
    token: TokenCheck | None = None
    access_log: AccessLog | None = None


class Calls:
    """Runs adapter methods as RPCs.

    A call is counted in the series of the model version that answered it, or (refused before
    it named one) of the newest version.

    Args:
        repository: the served model's versions.
        gate: the drain gate and in-flight bound shared by every API.
        policy: size limit, token, access log.
    """

    def __init__(self, repository: ModelRepository, gate: Gate, policy: CallPolicy) -> None:
        self._repository = repository
        self._gate = gate
        self._policy = policy

    def _metrics(self, call: Call) -> VersionMetrics:
        return call.metrics or self._repository.latest.runner.metrics

    def _check_token(self, context: grpc.ServicerContext) -> None:
        if self._policy.token is not None:
            self._policy.token.check(context.invocation_metadata())

    def _check_size(self, data: bytes) -> None:
        limit = self._policy.max_message_bytes
        if len(data) > limit:
            raise RequestError(
                Status.RESOURCE_EXHAUSTED,
                f"request: {len(data)} bytes, over the limit of {limit} (--max-message-bytes)",
            )

    def unary(self, method: MethodDescriptor, answer: Answer) -> Callable[[bytes, Any], Any]:
        """The gRPC behaviour of a unary method answered by `answer`."""
        name, parse, gate = method.name, parser(_request_type(method)), self._gate

        def behaviour(data: bytes, context: grpc.ServicerContext) -> Any:
            call = start_call(context, data)
            request, error = None, None
            in_flight = self._metrics(call).in_flight
            in_flight.inc()
            try:
                self._check_token(context)
                self._check_size(data)
                gate.enter()
                try:
                    request = parse(data)
                    return answer(request, call)
                finally:
                    gate.leave()
            except RequestError as exc:
                error = exc
            except Exception:
                log.exception("%s failed", name)
                error = RequestError(Status.INTERNAL, f"{name}: internal error")
            finally:
                in_flight.dec()
                self._finish(name, call, error, request, context)
            _abort(context, error)

        return behaviour

    def stream(
        self, method: MethodDescriptor, answer: Answer, on_error: OnError
    ) -> Callable[[Iterator[bytes], Any], Iterator[Any]]:
        """The gRPC behaviour of a bidirectional stream whose messages `answer` answers.

        The token and admission are checked once, when the stream opens; each message is then
        checked and answered on its own. Draining refuses a new stream (UNAVAILABLE); one already
        open runs on until the client closes it or the grace period ends.
        """
        name, parse, gate = method.name, parser(_request_type(method)), self._gate
        empty = _request_type(method)()

        def behaviour(messages: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[Any]:
            opened = start_call(context)
            try:
                self._check_token(context)
                gate.enter()
            except RequestError as exc:
                self._finish(name, opened, exc, None, context)
                _abort(context, exc)
            # A stream has one deadline for all its messages: read once, when it opens.
            deadline = opened.deadline
            try:
                for data in messages:
                    call = Call(time.perf_counter(), deadline, data)
                    yield self._stream_message(name, call, context, parse, answer, on_error, empty)
            finally:
                gate.leave()

        return behaviour

    def _stream_message(
        self,
        name: str,
        call: Call,
        context: grpc.ServicerContext,
        parse: Callable[[bytes], Any],
        answer: Answer,
        on_error: OnError,
        empty: Any,
    ) -> Any:
        data = call.data
        request, error = empty, None
        in_flight = self._metrics(call).in_flight
        in_flight.inc()
        try:
            self._check_size(data)
            request = parse(data)
            return answer(request, call)
        except RequestError as exc:
            error = exc
        except Exception:
            log.exception("%s message failed", name)
            error = RequestError(Status.INTERNAL, f"{name}: internal error")
        finally:
            in_flight.dec()
            self._finish(name, call, error, request, context)
        return on_error(request, error)

    def count_refusal(self, method: str, status: Status) -> None:
        """Count a call that gRPC refuses before any handler of ours runs."""
        self._repository.latest.runner.metrics.method(method).record(status.name, 0.0)

    def _finish(
        self,
        name: str,
        call: Call,
        error: RequestError | None,
        request: Any,
        context: grpc.ServicerContext,
    ) -> None:
        code = "OK" if error is None else error.status.name
        elapsed = time.perf_counter() - call.started
        metrics = self._metrics(call)
        metrics.method(name).record(code, elapsed)
        access_log = self._policy.access_log
        if access_log is not None:
            access_log.write(name, code, elapsed, context, request, metrics.version)
        elif error is not None and log.isEnabledFor(logging.DEBUG):
            log.debug("%s -> %s: %s", name, code, error.message)


def _abort(context: grpc.ServicerContext, error: RequestError) -> None:
    context.abort(GRPC_CODES[error.status], error.message)


def _request_type(method: MethodDescriptor) -> type:
    return message_factory.GetMessageClass(method.input_type)


class ApiHandler(grpc.GenericRpcHandler):
    """The handlers of one API service; gRPC asks it for the handler of every call, before it
    decides whether its own concurrency bound refuses the call, so `on_lookup(method name)` sees
    every call that reaches the server."""

    def __init__(self, service: ServiceDescriptor, handlers: dict[str, grpc.RpcMethodHandler]):
        self._handlers = {f"/{service.full_name}/{name}": h for name, h in handlers.items()}
        self._names = {f"/{service.full_name}/{name}": name for name in handlers}
        self.on_lookup: Callable[[str], None] | None = None

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        method = handler_call_details.method
        handler = self._handlers.get(method)
        if handler is not None and self.on_lookup is not None:
            self.on_lookup(self._names[method])
        return handler


def service_handler(service: ServiceDescriptor, adapter: object, calls: Calls) -> ApiHandler:
    """The gRPC handler of every method of `service`, each answered by the adapter's method of
    the same name (streams: marked with `answers_in_stream`). Requests arrive as bytes: `Calls`
    parses them, strictly."""
    handlers = {}
    for method in service.methods:
        serialize = message_factory.GetMessageClass(method.output_type).SerializeToString
        answer = getattr(adapter, method.name)
        if method.client_streaming and method.server_streaming:
            behaviour = calls.stream(method, answer, answer.on_error)
            handlers[method.name] = grpc.stream_stream_rpc_method_handler(
                behaviour, response_serializer=serialize
            )
        elif not (method.client_streaming or method.server_streaming):
            handlers[method.name] = grpc.unary_unary_rpc_method_handler(
                calls.unary(method, answer), response_serializer=serialize
            )
        else:
            raise NotImplementedError(f"{method.full_name}: one-way streams are not served")
    return ApiHandler(service, handlers)


def method_names(services: tuple[ServiceDescriptor, ...]) -> tuple[str, ...]:
    """Every RPC method name of `services`, in proto order."""
    return tuple(method.name for service in services for method in service.methods)
