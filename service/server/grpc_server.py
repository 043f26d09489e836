"""The gRPC server itself: its options and bounds, our handlers and the standard services
(health, reflection), a counted answer for methods nobody serves, and the port."""

from __future__ import annotations

from collections.abc import Sequence

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from foldserve.api.calls import refusal
from foldserve.core.dataplane import DataPlane
from foldserve.core.errors import RequestError, Status
from foldserve.server.config import ServeConfig
from foldserve.server.ports import ServeError, address, probe

# Messages up to this many times our size limit reach our code to be refused there (with our
# message, and counted), rather than by gRPC's own bound.
MESSAGE_SIZE_HEADROOM = 2
# HTTP/2 streams one connection may have open at once (SETTINGS_MAX_CONCURRENT_STREAMS; at least
# --max-concurrent-rpcs, so admission, not the transport, refuses a call over that bound: a grpcio
# client over it sees UNAVAILABLE, not RESOURCE_EXHAUSTED). grpc core counts a stream the client
# reset until the server has finished with it, so any bound stops HTTP/2 rapid reset
# (CVE-2023-44487): with none, one connection opening and cancelling streams in a loop grew a
# worker by ~1 GB in 2 s; with this one, by under 20 MB.
STREAMS_PER_CONNECTION = 1000
# The method label of calls to a method no service here has (counted, never one series each).
UNKNOWN_METHOD = "unknown"


def build(
    config: ServeConfig, handlers: Sequence[grpc.GenericRpcHandler], share_port: bool = False
) -> grpc.aio.Server:
    """A `grpc.aio` server with our handlers (build it on the serving event loop).
    `share_port`: bind with SO_REUSEPORT, beside the other workers of `--workers N`.

    The bound on calls in flight is ours (the data plane's admission): every call over it is
    refused by our code, with our message, and counted; gRPC's own is not set.
    """
    largest = config.max_message_bytes * MESSAGE_SIZE_HEADROOM
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", largest),
            ("grpc.max_send_message_length", largest),
            # Only workers share the port; otherwise a second server could silently share it.
            ("grpc.so_reuseport", 1 if share_port else 0),
            # grpc core closes a connection over this bound as it accepts it, before any
            # handshake: idle or hostile peers cannot hold more.
            ("grpc.max_allowed_incoming_connections", config.max_connections),
            (
                "grpc.max_concurrent_streams",
                max(STREAMS_PER_CONNECTION, config.max_concurrent_rpcs),
            ),
        ],
    )
    server.add_generic_rpc_handlers(tuple(handlers))
    return server


async def add_standard_services(
    server: grpc.aio.Server, config: ServeConfig, service_names: Sequence[str]
) -> health.aio.HealthServicer:
    """Health (every service NOT_SERVING until `set_health` says otherwise) and, when asked,
    reflection."""
    servicer = health.aio.HealthServicer()
    await set_health(servicer, service_names, health_pb2.HealthCheckResponse.NOT_SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    if config.reflection:
        names = (*service_names, health.SERVICE_NAME, reflection.SERVICE_NAME)
        reflection.enable_server_reflection(names, server)
    return servicer


async def set_health(
    servicer: health.aio.HealthServicer, service_names: Sequence[str], status: int
) -> None:
    """Set the status of the server ("") and of every named service."""
    for name in ("", *service_names):
        await servicer.set(name, status)


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

        self._plane.count_refusal(UNKNOWN_METHOD, Status.UNIMPLEMENTED)
        return refusal(RequestError(Status.UNIMPLEMENTED, message))


def bind(
    server: grpc.aio.Server,
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
