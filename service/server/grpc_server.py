"""The gRPC server itself: its options and bounds, our handlers and the standard services
(health, reflection), a counted answer for methods nobody serves, and the port."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from concurrent import futures
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from service.api.calls import ApiHandler, Calls
from service.core.errors import Status
from service.defaults import MESSAGE_SIZE_HEADROOM, RPC_HEADROOM
from service.server.config import ServeConfig
from service.server.ports import ServeError, address, probe

# The method label of calls to a method no service here has (counted, never one series each).
UNKNOWN_METHOD = "unknown"


def build(
    config: ServeConfig, handlers: Sequence[grpc.GenericRpcHandler], share_port: bool = False
) -> grpc.Server:
    """A sync thread-pool server (measured fastest for one-example calls; see the README's
    Performance section) with our handlers. `share_port`: bind with SO_REUSEPORT, beside the
    other workers of `--workers N`.

    gRPC's own bounds sit above ours (`RPC_HEADROOM` more calls, `MESSAGE_SIZE_HEADROOM` times
    the message size), so what we refuse is refused by our code, with our message, and counted.
    """
    workers = config.max_concurrent_rpcs + RPC_HEADROOM
    largest = config.max_message_bytes * MESSAGE_SIZE_HEADROOM
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="foldserve-rpc"),
        maximum_concurrent_rpcs=workers,
        options=[
            ("grpc.max_receive_message_length", largest),
            ("grpc.max_send_message_length", largest),
            # Only workers share the port; otherwise a second server could silently share it.
            ("grpc.so_reuseport", 1 if share_port else 0),
        ],
    )
    server.add_generic_rpc_handlers(tuple(handlers))
    return server


def add_standard_services(
    server: grpc.Server, config: ServeConfig, service_names: Sequence[str]
) -> health.HealthServicer:
    """Health (NOT_SERVING until `set_health` says otherwise) and, when asked, reflection."""
    servicer = health.HealthServicer()
    set_health(servicer, service_names, health_pb2.HealthCheckResponse.NOT_SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    if config.reflection:
        names = (*service_names, health.SERVICE_NAME, reflection.SERVICE_NAME)
        reflection.enable_server_reflection(names, server)
    return servicer


def set_health(servicer: health.HealthServicer, service_names: Sequence[str], status: int) -> None:
    """Set the status of the server ("") and of every API service."""
    for name in ("", *service_names):
        servicer.set(name, status)


class UnknownMethods(grpc.GenericRpcHandler):
    """Answers a method no service here has with UNIMPLEMENTED, counted like any other call.

    Added after every other handler: gRPC asks it only when none of them serves the method.
    """

    def __init__(self, calls: Calls, served: Sequence[str]) -> None:
        self._calls = calls
        self._served = ", ".join(served)

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        method = handler_call_details.method
        message = f"method {method!r} is not served here; the services are {self._served}"

        def refuse(requests: Iterator[Any], context: grpc.ServicerContext) -> Iterator[Any]:
            self._calls.count_refusal(UNKNOWN_METHOD, Status.UNIMPLEMENTED)
            context.abort(grpc.StatusCode.UNIMPLEMENTED, message)
            yield from ()

        return grpc.stream_stream_rpc_method_handler(refuse)


def count_grpc_refusals(server: grpc.Server, handlers: Sequence[ApiHandler], calls: Calls) -> None:
    """Count, as RESOURCE_EXHAUSTED of their method, the calls gRPC refuses for its concurrency
    bound (which sits `RPC_HEADROOM` above ours, so only a flood reaches it).

    gRPC looks the handler up under its server lock right before it compares its count of
    active calls with the bound, so reading that count in the lookup tells exactly which calls
    it is about to refuse. The count is grpcio's (pinned) internal state: the test of a flood
    fails if an upgrade changes it.
    """
    state = server._state

    def on_lookup(method: str) -> None:
        bound = state.maximum_concurrent_rpcs
        if bound is not None and state.active_rpc_count >= bound:
            calls.count_refusal(method, Status.RESOURCE_EXHAUSTED)

    for handler in handlers:
        handler.on_lookup = on_lookup


def bind(
    server: grpc.Server,
    host: str,
    port: int,
    credentials: grpc.ServerCredentials | None,
    shared: bool = False,
) -> int:
    """Listen on `host:port` (TLS when `credentials`); the port bound. `shared`: a worker's port,
    which the supervisor has already probed and holds.

    Raises:
        ServeError: the port is in use or the address is invalid.
    """
    if port and not shared:  # port 0 always finds a free port
        probe(host, port)
    where = address(host, port)
    try:
        if credentials is None:
            bound = server.add_insecure_port(where)
        else:
            bound = server.add_secure_port(where, credentials)
    except RuntimeError as exc:
        raise ServeError(f"cannot listen on {where}: port in use or address invalid") from exc
    if not bound:  # older grpcio reports failure as port 0
        raise ServeError(f"cannot listen on {where}: port in use or address invalid")
    return bound
