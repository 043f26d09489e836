"""`foldserve health`: ask a server's standard gRPC health service; for Docker HEALTHCHECK."""

from __future__ import annotations

import sys
from collections.abc import Callable

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from foldserve.client.rpc_errors import describe_rpc_error


def check(
    target: str,
    service: str,
    timeout: float,
    connect: Callable[[], grpc.Channel] | None = None,
) -> int:
    """Check `service` on `target`.

    Args:
        connect: opens the channel (`foldserve.client.channel.open_channel` for TLS); plaintext
            to `target` when None.

    Returns:
        0 when the answer is SERVING; 1 otherwise (not serving, unknown service, no answer),
        with the reason on stderr.
    """
    with connect() if connect else grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        except grpc.RpcError as exc:
            print(
                f"foldserve health: {target} service {service!r}: {describe_rpc_error(exc)}",
                file=sys.stderr,
            )
            return 1
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    if reply.status != health_pb2.HealthCheckResponse.SERVING:
        print(f"foldserve health: {target} service {service!r} is {status}", file=sys.stderr)
        return 1
    return 0
