"""How every RPC of our APIs runs, and the gRPC handlers that run them.

An API adapter is a plain object with one method per RPC, `Method(request, call) -> response`,
that reads as decode → core → encode and knows no gRPC. `service_handler` builds, from the proto's
service descriptor, the gRPC handler of every method; `Calls` wraps each adapter method with what
every call shares: admission (the drain gate), the in-flight gauge, per-method metrics, mapping a
`RequestError` to its gRPC status, and logging what went wrong.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import grpc
from google.protobuf import message_factory
from google.protobuf.descriptor import ServiceDescriptor

from service.core.call import Call
from service.core.errors import RequestError, Status
from service.core.gate import Gate
from service.core.repository import ModelRepository
from service.metrics import VersionMetrics

log = logging.getLogger(__name__)

GRPC_CODES = {status: grpc.StatusCode[status.name] for status in Status}

Answer = Callable[[Any, Call], Any]
OnError = Callable[[Any, RequestError], Any]


def start_call(context: grpc.ServicerContext) -> Call:
    """The core's view of a call starting now: its start and its deadline as plain numbers."""
    started = time.perf_counter()
    remaining = context.time_remaining()
    # time.monotonic, the clock the core compares deadlines with; None: no deadline.
    return Call(started, None if remaining is None else time.monotonic() + remaining)


def answers_in_stream(on_error: OnError) -> Callable[[Answer], Answer]:
    """Mark an adapter method as the per-message answer of a bidirectional stream.

    A `RequestError` for one message becomes `on_error(request, error)`, sent in the stream in its
    place, and the stream goes on.
    """

    def mark(answer: Answer) -> Answer:
        answer.on_error = on_error  # type: ignore[attr-defined]
        return answer

    return mark


class Calls:
    """Runs adapter methods as RPCs: admission, metrics, status mapping and (debug) logging.

    A call is counted in the series of the model version that answered it, or (refused before
    it named one) of the newest version.

    Args:
        repository: the served model's versions.
        gate: the drain gate shared by every API.
    """

    def __init__(self, repository: ModelRepository, gate: Gate) -> None:
        self._repository = repository
        self._gate = gate

    def _metrics(self, call: Call) -> VersionMetrics:
        served = call.served or self._repository.latest
        return served.runner.metrics

    def unary(self, method: str, answer: Answer) -> Callable[[Any, grpc.ServicerContext], Any]:
        """The gRPC behaviour of a unary method answered by `answer`."""
        gate = self._gate

        def behaviour(request: Any, context: grpc.ServicerContext) -> Any:
            call = start_call(context)
            error: RequestError | None = None
            in_flight = self._metrics(call).in_flight
            in_flight.inc()
            try:
                gate.enter()
                try:
                    return answer(request, call)
                finally:
                    gate.leave()
            except RequestError as exc:
                error = exc
            except Exception:
                log.exception("%s failed", method)
                error = RequestError(Status.INTERNAL, f"{method}: internal error")
            finally:
                in_flight.dec()
                code = "OK" if error is None else error.status.name
                self._metrics(call).method(method).record(code, time.perf_counter() - call.started)
            _abort(context, method, error)

        return behaviour

    def stream(
        self, method: str, answer: Answer, on_error: OnError
    ) -> Callable[[Iterator[Any], grpc.ServicerContext], Iterator[Any]]:
        """The gRPC behaviour of a bidirectional stream whose messages `answer` answers.

        Draining refuses a new stream (UNAVAILABLE); one already open runs on until the client
        closes it or the grace period ends.
        """
        gate = self._gate

        def behaviour(requests: Iterator[Any], context: grpc.ServicerContext) -> Iterator[Any]:
            try:
                gate.enter()
            except RequestError as exc:
                self._metrics(start_call(context)).method(method).count(exc.status.name)
                _abort(context, method, exc)
            try:
                for request in requests:
                    call = start_call(context)
                    in_flight = self._metrics(call).in_flight
                    in_flight.inc()
                    try:
                        response, code = answer(request, call), "OK"
                    except RequestError as exc:
                        response, code = on_error(request, exc), exc.status.name
                    except Exception:
                        log.exception("%s message failed", method)
                        error = RequestError(Status.INTERNAL, f"{method}: internal error")
                        response, code = on_error(request, error), "INTERNAL"
                    finally:
                        in_flight.dec()
                    elapsed = time.perf_counter() - call.started
                    self._metrics(call).method(method).record(code, elapsed)
                    yield response
            finally:
                gate.leave()

        return behaviour


def _abort(context: grpc.ServicerContext, method: str, error: RequestError) -> None:
    if log.isEnabledFor(logging.DEBUG):
        log.debug("%s -> %s: %s", method, error.status.name, error.message)
    context.abort(GRPC_CODES[error.status], error.message)


def service_handler(
    service: ServiceDescriptor, adapter: object, calls: Calls
) -> grpc.GenericRpcHandler:
    """The gRPC handler of every method of `service`, each answered by the adapter's method of
    the same name (streams: marked with `answers_in_stream`)."""
    handlers = {}
    for method in service.methods:
        request = message_factory.GetMessageClass(method.input_type)
        response = message_factory.GetMessageClass(method.output_type)
        answer = getattr(adapter, method.name)
        if method.client_streaming and method.server_streaming:
            handlers[method.name] = grpc.stream_stream_rpc_method_handler(
                calls.stream(method.name, answer, answer.on_error),
                request_deserializer=request.FromString,
                response_serializer=response.SerializeToString,
            )
        elif not (method.client_streaming or method.server_streaming):
            handlers[method.name] = grpc.unary_unary_rpc_method_handler(
                calls.unary(method.name, answer),
                request_deserializer=request.FromString,
                response_serializer=response.SerializeToString,
            )
        else:
            raise NotImplementedError(f"{method.full_name}: one-way streams are not served")
    return grpc.method_handlers_generic_handler(service.full_name, handlers)


def method_names(services: Iterable[ServiceDescriptor]) -> tuple[str, ...]:
    """Every RPC method name of `services`, in proto order."""
    return tuple(method.name for service in services for method in service.methods)
