"""Building and starting the gRPC server: core, API adapters, health, reflection, ports, metrics.

One place where everything is built (kserve's `ModelServer` is the model): `start_server` turns
settings and a loaded model into a running server; `RunningServer.drain` stops it gracefully.
"""

from __future__ import annotations

import errno
import logging
import socket
import time
from concurrent import futures
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import CollectorRegistry

from service.api import inference, predictor
from service.api.calls import Calls, method_names, service_handler
from service.core.gate import Gate
from service.core.model import Model
from service.core.runner import ModelRunner
from service.defaults import DRAIN_QUIET_SECONDS
from service.metrics import Metrics, serve_metrics
from service.server.config import ServeConfig

log = logging.getLogger(__name__)

SERVICES = (predictor.SERVICE, inference.SERVICE)
SERVICE_NAMES = tuple(service.full_name for service in SERVICES)


class ServeError(Exception):
    """The server cannot start (port in use, bad address); the message says which."""


@dataclass
class RunningServer:
    """A started server and what it takes to stop it."""

    server: grpc.Server
    port: int
    health: health.HealthServicer
    gate: Gate
    metrics: Metrics
    metrics_http: object | None = None
    metrics_port: int | None = None

    def drain(self, grace: float) -> None:
        """Stop gracefully: NOT_SERVING, refuse new calls, let calls in flight finish in `grace`.

        grpcio's own `stop(grace)` stops taking calls off the wire, so a call that reaches the
        server after it starts hangs until the grace period ends and is then CANCELLED. So we
        refuse new calls ourselves (UNAVAILABLE, which clients retry elsewhere), wait until the
        admitted ones are done and clients have gone quiet, and only then stop grpcio.
        """
        start = time.monotonic()
        deadline = start + grace
        self.health.enter_graceful_shutdown()
        self.gate.start_draining()
        idle = self.gate.wait_idle(grace)
        log.info("draining: %s", "no call in flight" if idle else "grace period over")
        while (now := time.monotonic()) < deadline:
            if now - max(start, self.gate.last_refused) >= DRAIN_QUIET_SECONDS:
                break
            time.sleep(DRAIN_QUIET_SECONDS / 5)
        # Whatever is left is a call refused just now (its answer is on the way) or a stream
        # still open at the end of the grace period.
        self.server.stop(min(max(deadline - time.monotonic(), 0.0), DRAIN_QUIET_SECONDS)).wait()
        if self.metrics_http is not None:
            self.metrics_http.shutdown()  # type: ignore[attr-defined]


def address(host: str, port: int) -> str:
    """`host:port`, with an IPv6 host in brackets."""
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


def build_metrics(model: Model, registry: CollectorRegistry) -> Metrics:
    """The server's metrics for `model`, every RPC's series present from the start."""
    meta = model.metadata
    return Metrics(
        registry,
        model.name,
        model.version,
        sha256=model.sha256,
        opset=model.opset,
        foldserve_version=meta.foldserve_version,
        class_labels=model.class_labels,
        methods=method_names(SERVICES),
    )


def _grpc_server(config: ServeConfig, calls: Calls, runner: ModelRunner) -> grpc.Server:
    # A sync thread-pool server: measured fastest for one-example calls (see README, Performance).
    # One worker per admitted call, so open streams never starve unary calls.
    server = grpc.server(
        futures.ThreadPoolExecutor(
            max_workers=config.max_concurrent_rpcs + 4, thread_name_prefix="foldserve-rpc"
        ),
        maximum_concurrent_rpcs=config.max_concurrent_rpcs,
        options=[
            ("grpc.max_receive_message_length", config.max_message_bytes),
            ("grpc.max_send_message_length", config.max_message_bytes),
            # Without this a second server could silently share the port.
            ("grpc.so_reuseport", 0),
        ],
    )
    adapters = (predictor.PredictorAdapter(runner), inference.InferenceAdapter(runner))
    server.add_generic_rpc_handlers(
        tuple(service_handler(s, a, calls) for s, a in zip(SERVICES, adapters, strict=True))
    )
    if config.reflection:
        names = (*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME)
        reflection.enable_server_reflection(names, server)
    return server


def _health(server: grpc.Server) -> health.HealthServicer:
    servicer = health.HealthServicer()
    set_health(servicer, health_pb2.HealthCheckResponse.NOT_SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    return servicer


def set_health(servicer: health.HealthServicer, status: int) -> None:
    """Set the status of the server ("") and of every API service."""
    for name in ("", *SERVICE_NAMES):
        servicer.set(name, status)


def _probe(host: str, port: int) -> None:
    """Raise ServeError when `host:port` cannot be bound, before gRPC tries.

    gRPC's C core logs an error line of its own (`E1201 ... add_port.cc:83] ...`) on stderr
    before failing, so a port in use is caught here first, with one clean message.
    """
    where = address(host, port)
    try:
        found = socket.getaddrinfo(
            host.strip("[]"), port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as exc:
        raise ServeError(
            f"cannot listen on {where}: not a usable address ({exc.strerror})"
        ) from None
    family, kind, proto, _, sockaddr = found[0]
    with socket.socket(family, kind, proto) as probe:
        # As gRPC's listener does: a port whose last connection lingers in TIME_WAIT is free.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(sockaddr)
        except OSError as exc:
            reason = "port in use" if exc.errno == errno.EADDRINUSE else exc.strerror
            raise ServeError(f"cannot listen on {where}: {reason}") from None


def _bind(server: grpc.Server, host: str, port: int) -> int:
    where = address(host, port)
    if port:  # port 0 always finds a free port
        _probe(host, port)
    try:
        bound = server.add_insecure_port(where)
    except RuntimeError as exc:
        raise ServeError(f"cannot listen on {where}: port in use or address invalid") from exc
    if not bound:  # older grpcio reports failure as port 0
        raise ServeError(f"cannot listen on {where}: port in use or address invalid")
    return bound


def _metrics_endpoint(
    registry: CollectorRegistry, host: str, port: int
) -> tuple[object | None, int | None]:
    try:
        return serve_metrics(registry, host, port)
    except OSError as exc:
        raise ServeError(f"cannot serve metrics on {address(host, port)}: {exc}") from exc


def start_server(
    config: ServeConfig,
    model: Model,
    registry: CollectorRegistry,
    *,
    serve_metrics_http: bool = True,
) -> RunningServer:
    """Build and start the gRPC server (and the /metrics endpoint) for a loaded model.

    Raises:
        ServeError: the gRPC or metrics port cannot be bound.
    """
    metrics = build_metrics(model, registry)
    gate = Gate()
    server = _grpc_server(config, Calls(metrics, gate), ModelRunner(model, metrics))
    health_servicer = _health(server)
    port = _bind(server, config.host, config.port)
    metrics_http, metrics_port = None, None
    if serve_metrics_http:
        metrics_http, metrics_port = _metrics_endpoint(registry, config.host, config.metrics_port)
    server.start()
    set_health(health_servicer, health_pb2.HealthCheckResponse.SERVING)
    return RunningServer(server, port, health_servicer, gate, metrics, metrics_http, metrics_port)
