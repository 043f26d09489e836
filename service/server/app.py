"""Building and starting the server: core, API adapters, health, reflection, ports, metrics.

One place where everything is built (kserve's `ModelServer` is the model): `start_server` turns
settings into a running server; `RunningServer.drain` stops it gracefully.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2
from prometheus_client import CollectorRegistry
from threadpoolctl import threadpool_limits

from foldserve.api import inference, predictor
from foldserve.api.calls import method_names, service_handler
from foldserve.core.access import AccessLog
from foldserve.core.adapt.serving import CandidateBuilder, candidate_folder
from foldserve.core.call_cycle import CallPolicy
from foldserve.core.dataplane import DataPlane, ServerInfo
from foldserve.core.gate import Gate
from foldserve.core.metrics import Metrics
from foldserve.core.priority import Background
from foldserve.core.repository import Repository
from foldserve.core.repository_settings import RepositorySettings
from foldserve.core.shared_memory import EXTENSION as SHARED_MEMORY
from foldserve.core.shared_memory import SystemSharedMemory
from foldserve.core.shift.settings import SHIFT_STATE_DIR_ENV, ShiftSettings
from foldserve.server import grpc_server
from foldserve.server.config import ServeConfig
from foldserve.server.credentials import Credentials
from foldserve.server.event_loop import LoopThread
from foldserve.server.http_server import HttpServer, start_http, stop_http
from foldserve.server.metrics_http import serve_metrics
from foldserve.server.model_control import WorkerControl
from foldserve.server.ports import ServeError, address
from foldserve.server.reload import Reloader
from foldserve.server.security import SecurityError
from foldserve.version import VERSION

# A health service name that stays SERVING while the server drains, for liveness probes: readiness
# ("" and each API) turns NOT_SERVING at SIGTERM, and a draining server must not be restarted.
LIVENESS_SERVICE = "liveness"
# While draining, stop only once no call has been refused for this long (seconds).
DRAIN_QUIET_SECONDS = 0.25
# The name `ServerMetadata` answers with (the V2 protocol's server name).
SERVER_NAME = "foldserve"
# The protocol extensions `ServerMetadata` lists, by Triton's names (`docs/protocol/`).
EXTENSIONS = (
    "binary_tensor_data",
    "classification",
    "model_configuration",
    "model_repository",
    "parameters",
    "statistics",
)


log = logging.getLogger(__name__)

SERVICES = (predictor.SERVICE, inference.SERVICE)
SERVICE_NAMES = tuple(service.full_name for service in SERVICES)
# The RPCs that name a model version, whose series every loaded version has from the start (the
# others, server-wide, count under model="" version="" as they come).
VERSIONED_METHODS = frozenset({
    "Predict", "PredictStream", "DescribeModel", "ModelReady", "ModelMetadata", "ModelInfer",
    "ModelStreamInfer", "ModelConfig",
})  # fmt: skip

__all__ = ["SERVICES", "SERVICE_NAMES", "RunningServer", "ServeError", "start_server"]


@dataclass
class RunningServer:
    """A started server and what it takes to stop it."""

    server: grpc.aio.Server
    port: int
    health: health.aio.HealthServicer
    plane: DataPlane
    reloader: Reloader
    loop: LoopThread
    http: HttpServer
    credentials: Credentials
    metrics_http: object | None = None
    metrics_port: int | None = None

    @property
    def http_port(self) -> int:
        return self.http.port

    def look_again(self) -> None:
        """Look at the model repository and the TLS and token files now (SIGHUP)."""
        self.reloader.trigger()
        self.credentials.trigger()

    @property
    def repository(self) -> Repository:
        return self.plane.repository

    @property
    def gate(self) -> Gate:
        return self.plane.gate

    def drain(self, grace: float, delay: float = 0.0) -> None:
        """Stop gracefully: NOT_SERVING, after `delay` seconds refuse new calls, then let calls in
        flight finish in `grace`. Called from any thread but the serving loop's.

        grpcio's own `stop(grace)` stops taking calls off the wire, so a call that reaches the
        server after it starts hangs until the grace period ends and is then CANCELLED. So we
        refuse new calls ourselves (UNAVAILABLE, which clients retry elsewhere), wait until the
        admitted ones are done and clients have gone quiet, and only then stop grpcio. A second
        drain does nothing.
        """
        if self.loop.loop.is_closed():
            return
        self.reloader.stop()
        self.credentials.stop()
        if self.plane.candidates is not None:
            self.plane.candidates.stop()
        # Readiness goes first, liveness (LIVENESS_SERVICE) stays SERVING until the process exits;
        # during `delay` calls are still served, so what a balancer sends before it notices is
        # answered, not refused.
        not_serving = health_pb2.HealthCheckResponse.NOT_SERVING
        self.plane.stop_ready()
        self.loop.call(grpc_server.set_health(self.health, SERVICE_NAMES, not_serving))
        time.sleep(delay)
        start = time.monotonic()
        deadline = start + grace
        self.gate.start_draining()
        idle = self.gate.wait_idle(grace)
        log.info("draining: %s", "no call in flight" if idle else "grace period over")
        while (now := time.monotonic()) < deadline:
            if now - max(start, self.gate.last_refused) >= DRAIN_QUIET_SECONDS:
                break
            time.sleep(DRAIN_QUIET_SECONDS / 5)
        # Whatever is left is a call refused just now (its answer is on the way) or a stream
        # still open at the end of the grace period.
        left = min(max(deadline - time.monotonic(), 0.0), DRAIN_QUIET_SECONDS)
        self.loop.call(self.server.stop(left))
        self.loop.call(stop_http(self.http))
        self.loop.stop()
        self.plane.shared_memory.close()
        if self.metrics_http is not None:
            self.metrics_http.shutdown()  # type: ignore[attr-defined]


def shift_settings(config: ServeConfig) -> ShiftSettings:
    """The shift monitors' settings; their state is shared by the workers of one server through
    the directory the supervisor names in the environment (`core.shift.shared`)."""
    return ShiftSettings(
        config.shift_monitor,
        config.shift_check_every,
        arl=config.shift_arl,
        state_dir=os.environ.get(SHIFT_STATE_DIR_ENV) or None,
    )


def open_repository(config: ServeConfig, registry: CollectorRegistry) -> Repository:
    """The models to serve (`--model` or `--model-repository`), loaded as the model control
    mode says, their metrics on `registry`.

    Raises:
        ModelError: nothing can be served.
    """
    methods = [name for name in method_names(SERVICES) if name in VERSIONED_METHODS]
    metrics = Metrics(registry, methods=methods)
    settings = RepositorySettings(
        config.keep_versions,
        shift_settings(config),
        config.model_control_mode,
        config.load_model,
        config.default_model,
        config.instances or config.worker_count,
        config.adapt_reservoir,
    )
    if config.model:
        source = {"model": (Path(config.model), config.model_name)}
    else:
        source = {"root": Path(config.model_repository)}  # type: ignore[arg-type]
    repository = Repository(metrics, settings, **source)
    repository.start()
    return repository


def _security(config: ServeConfig, registry: CollectorRegistry) -> tuple[Credentials, CallPolicy]:
    """TLS credentials and what every call must pass, read before anything else starts."""
    try:
        credentials = Credentials(config, registry)
    except SecurityError as exc:
        raise ServeError(str(exc)) from None
    access_log = AccessLog() if config.access_log else None
    return credentials, CallPolicy(config.max_message_bytes, credentials.token, access_log)


def _metrics_endpoint(
    registry: CollectorRegistry, host: str, port: int
) -> tuple[object | None, int | None]:
    try:
        return serve_metrics(registry, host, port)
    except OSError as exc:
        raise ServeError(f"cannot serve metrics on {address(host, port)}: {exc}") from exc


async def _start_grpc(
    config: ServeConfig,
    plane: DataPlane,
    credentials: Credentials,
    share_port: bool,
) -> tuple[grpc.aio.Server, health.aio.HealthServicer, int]:
    """Build, bind and start the gRPC server on the running loop; (server, health, port)."""
    adapters = (predictor.PredictorAdapter(plane), inference.InferenceAdapter(plane))
    handlers = [service_handler(s, a, plane) for s, a in zip(SERVICES, adapters, strict=True)]
    server = grpc_server.build(config, handlers, share_port)
    health_servicer = await grpc_server.add_standard_services(server, config, SERVICE_NAMES)
    server.add_generic_rpc_handlers((grpc_server.UnknownMethods(plane, SERVICE_NAMES),))
    tls = credentials.grpc_credentials()
    port = grpc_server.bind(server, config.host, config.port, tls, share_port)
    await server.start()
    return server, health_servicer, port


def start_server(
    config: ServeConfig,
    registry: CollectorRegistry,
    *,
    serve_metrics_http: bool = True,
    share_port: bool = False,
    control: WorkerControl | None = None,
) -> RunningServer:
    """Load the model repository, then start the gRPC and HTTP servers on a serving event loop of
    their own (and the /metrics endpoint).

    `share_port`: a worker of `--workers N`, binding the port the supervisor reserved;
    `control`: a worker's model control (on every worker), attached before it serves a call.

    Raises:
        ModelError: nothing in `config.model` can be served.
        ServeError: a port cannot be bound, or a TLS or token file cannot be used.
    """
    # numpy's arrays here are small (a monitor's fold, a class test's chain at load): BLAS
    # threads only contend with the event loop and onnxruntime for the cores. A 265-state chain
    # took 45 ms with OpenBLAS's threads on two busy cores and 2 ms with one.
    threadpool_limits(1, user_api="blas")
    credentials, policy = _security(config, registry)
    repository = open_repository(config, registry)
    if control is not None:
        control.attach(repository)  # with a new worker's candidates applied
    gate = Gate(config.max_concurrent_rpcs)
    shared_memory = SystemSharedMemory(config.shared_memory)
    extensions = (*EXTENSIONS, SHARED_MEMORY) if config.shared_memory else EXTENSIONS
    info = ServerInfo(SERVER_NAME, VERSION, extensions)
    # Model control loads models: on a thread of lower priority than the serving loop.
    apply = control or Background().wrap(repository.apply)
    plane = DataPlane(repository, gate, policy, info, shared_memory, apply)
    if config.adapt_reservoir:
        plane.candidates = CandidateBuilder(
            repository, plane.control, candidate_folder, config.adapt_on_alarm
        )
        plane.candidates.start()
    loop = LoopThread(config.event_loop)
    try:
        server, health_servicer, port = loop.call(
            _start_grpc(config, plane, credentials, share_port)
        )
        http = loop.call(start_http(config, plane, share_port, credentials.http_context()))
        metrics_http, metrics_port = None, None
        if serve_metrics_http:
            metrics_http, metrics_port = _metrics_endpoint(
                registry, config.host, config.metrics_port
            )
    except BaseException:
        loop.stop()
        raise
    reloader = Reloader(repository.refresh, config.poll_seconds)
    reloader.start()
    credentials.start()
    ready = (*SERVICE_NAMES, LIVENESS_SERVICE)
    loop.call(
        grpc_server.set_health(health_servicer, ready, health_pb2.HealthCheckResponse.SERVING)
    )
    return RunningServer(
        server,
        port,
        health_servicer,
        plane,
        reloader,
        loop,
        http,
        credentials,
        metrics_http,
        metrics_port,
    )
