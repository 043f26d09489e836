"""The gRPC server itself: its options and bounds, our handlers and the standard services
(health, reflection), a counted answer for methods nobody serves, and the port."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from concurrent import futures
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from foldserve.core.dataplane import DataPlane
from foldserve.core.errors import Status
from foldserve.server.config import ServeConfig
from foldserve.server.ports import ServeError, address, probe

# gRPC's own bounds sit above ours, so that what we refuse is answered (and counted) by us: room
# for health checks and reflection beside a full house, and messages up to this many times our
# size limit reach our code to be refused there.
RPC_HEADROOM = 32
MESSAGE_SIZE_HEADROOM = 2


# The method label of calls to a method no service here has (counted, never one series each).
UNKNOWN_METHOD = "unknown"


def build(
    config: ServeConfig, handlers: Sequence[grpc.GenericRpcHandler], share_port: bool = False
) -> grpc.Server:
    """A sync thread-pool server with our handlers. `share_port`: bind with SO_REUSEPORT,
    beside the other workers of `--workers N`.

    The bound on calls in flight is ours (the data plane's admission), so every call over it is
    refused by our code, with our message, and counted; the pool has `RPC_HEADROOM` threads more
    for health checks and reflection beside a full house, and calls beyond the pool wait for a
    thread. Messages up to `MESSAGE_SIZE_HEADROOM` times our size limit reach our code to be
    refused there.
    """
    workers = config.max_concurrent_rpcs + RPC_HEADROOM
    largest = config.max_message_bytes * MESSAGE_SIZE_HEADROOM
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="foldserve-rpc"),
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

    def __init__(self, plane: DataPlane, served: Sequence[str]) -> None:
        self._plane = plane
        self._served = ", ".join(served)

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        method = handler_call_details.method
        message = f"method {method!r} is not served here; the services are {self._served}"

        def refuse(requests: Iterator[Any], context: grpc.ServicerContext) -> Iterator[Any]:
            self._plane.count_refusal(UNKNOWN_METHOD, Status.UNIMPLEMENTED)
            context.abort(grpc.StatusCode.UNIMPLEMENTED, message)
            yield from ()

        return grpc.stream_stream_rpc_method_handler(refuse)


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
