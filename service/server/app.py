"""Building and starting the gRPC server: core, API adapters, health, reflection, ports, metrics.

One place where everything is built (kserve's `ModelServer` is the model): `start_server` turns
settings and a loaded model into a running server; `RunningServer.drain` stops it gracefully.
"""

from __future__ import annotations

import logging
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
from service.core.repository import ModelRepository
from service.defaults import DRAIN_QUIET_SECONDS
from service.metrics import Metrics, serve_metrics
from service.server.config import ServeConfig
from service.server.reload import Reloader

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
    repository: ModelRepository
    reloader: Reloader
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
        self.reloader.stop()
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


def open_repository(config: ServeConfig, registry: CollectorRegistry) -> ModelRepository:
    """The served model's repository, its first versions loaded, its metrics on `registry`.

    Raises:
        ModelError: nothing in `config.model` can be served.
    """
    metrics = Metrics(registry, config.model_name, methods=method_names(SERVICES))
    repository = ModelRepository(config.model, config.model_name, metrics, config.keep_versions)
    repository.start()
    return repository


def _grpc_server(config: ServeConfig, calls: Calls, repository: ModelRepository) -> grpc.Server:
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
    adapters = (predictor.PredictorAdapter(repository), inference.InferenceAdapter(repository))
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


def _bind(server: grpc.Server, host: str, port: int) -> int:
    where = address(host, port)
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
    registry: CollectorRegistry,
    *,
    serve_metrics_http: bool = True,
) -> RunningServer:
    """Load the model repository, build and start the gRPC server (and the /metrics endpoint).

    Raises:
        ModelError: nothing in `config.model` can be served.
        ServeError: the gRPC or metrics port cannot be bound.
    """
    repository = open_repository(config, registry)
    gate = Gate()
    server = _grpc_server(config, Calls(repository, gate), repository)
    health_servicer = _health(server)
    port = _bind(server, config.host, config.port)
    metrics_http, metrics_port = None, None
    if serve_metrics_http:
        metrics_http, metrics_port = _metrics_endpoint(registry, config.host, config.metrics_port)
    server.start()
    reloader = Reloader(repository, config.poll_seconds)
    reloader.start()
    set_health(health_servicer, health_pb2.HealthCheckResponse.SERVING)
    return RunningServer(
        server, port, health_servicer, gate, repository, reloader, metrics_http, metrics_port
    )
