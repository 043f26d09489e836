"""Wiring of the gRPC server: servicers, health, reflection, metrics endpoint, drain on signals."""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
from concurrent import futures
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import CollectorRegistry, disable_created_metrics

from service._proto.foldserve.v1 import predictor_pb2, predictor_pb2_grpc
from service._proto.inference import grpc_predict_v2_pb2, grpc_predict_v2_pb2_grpc
from service.config import ServeConfig
from service.logs import setup_logging
from service.metrics import Metrics, serve_metrics
from service.model import Model, ModelError, load_model
from service.servicers.calls import Calls, Gate, ModelRunner
from service.servicers.inference import InferenceServicer
from service.servicers.predictor import PredictorServicer
from service.shift import InputShiftMonitor

log = logging.getLogger("foldserve.server")

# While draining, stop only once no call has been refused for this long (seconds).
QUIET = 0.25

SERVICE_NAMES = (
    predictor_pb2.DESCRIPTOR.services_by_name["Predictor"].full_name,
    grpc_predict_v2_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name,
)


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
            if now - max(start, self.gate.last_refused) >= QUIET:
                break
            time.sleep(QUIET / 5)
        # Whatever is left is a call refused just now (its answer is on the way) or a stream
        # still open at the end of the grace period.
        self.server.stop(min(max(deadline - time.monotonic(), 0.0), QUIET)).wait()
        if self.metrics_http is not None:
            self.metrics_http.shutdown()  # type: ignore[attr-defined]


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


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
        ModelError: the model's input BN statistics do not fit its input.
    """
    try:
        shift = InputShiftMonitor.from_bn_stats(model.bn_stats, model.input_shape)
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise ModelError(
            f"model file {model.path!r}: foldserve.bn_stats has no usable input statistics: {exc}"
        ) from None
    metrics = Metrics(
        registry,
        model.name,
        model.version,
        sha256=model.sha256,
        opset=model.opset,
        foldserve_version=model.foldserve_version,
        class_labels=model.class_labels,
    )
    gate = Gate()
    calls = Calls(metrics, gate)
    if shift is not None:
        metrics.watch_input_shift(shift.score)
    runner = ModelRunner(model, metrics, shift)
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
    predictor_pb2_grpc.add_PredictorServicer_to_server(PredictorServicer(runner, calls), server)
    grpc_predict_v2_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(
        InferenceServicer(runner, calls), server
    )
    health_servicer = health.HealthServicer()
    for name in ("", *SERVICE_NAMES):
        health_servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    if config.reflection:
        names = (*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME)
        reflection.enable_server_reflection(names, server)
    address = _address(config.host, config.port)
    try:
        port = server.add_insecure_port(address)
    except RuntimeError as exc:
        raise ServeError(f"cannot listen on {address}: port in use or address invalid") from exc
    if not port:  # older grpcio reports failure as port 0
        raise ServeError(f"cannot listen on {address}: port in use or address invalid")
    metrics_http, metrics_port = None, None
    if serve_metrics_http:
        try:
            metrics_http, metrics_port = serve_metrics(registry, config.host, config.metrics_port)
        except OSError as exc:
            raise ServeError(
                f"cannot serve metrics on {_address(config.host, config.metrics_port)}: {exc}"
            ) from exc
    server.start()
    for name in ("", *SERVICE_NAMES):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return RunningServer(server, port, health_servicer, gate, metrics, metrics_http, metrics_port)


def serve(config: ServeConfig) -> int:
    """Run `foldserve serve` until SIGTERM/SIGINT, then drain.

    Returns:
        0 after a clean drain, 2 when the server cannot start (message on stderr).
    """
    setup_logging(config.log_level, config.log_format)
    # A `_created` twin of every counter and histogram doubles the series for nothing a
    # dashboard or alert here reads.
    disable_created_metrics()
    try:
        model = load_model(config.model, config.model_name)
        running = start_server(config, model, CollectorRegistry())
    except (ModelError, ServeError) as exc:
        print(f"foldserve serve: error: {exc}", file=sys.stderr, flush=True)
        return 2
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda number, _frame: stop.set())
    log.info(
        "serving model %s version %s from %s on %s grpc_port=%d metrics_port=%s",
        model.name,
        model.version,
        model.path,
        _address(config.host, running.port),
        running.port,
        running.metrics_port,
    )
    while not stop.wait(1.0):
        pass
    log.info("signal received: draining (grace %.1f s)", config.grace_seconds)
    running.drain(config.grace_seconds)
    log.info("stopped")
    return 0
