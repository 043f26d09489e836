"""A serving process's life once it is up: the line that says so, then serving until a signal,
then the drain. The single server (`run`) and every worker (`worker`) live it; the supervisor
only writes the line."""

from __future__ import annotations

import logging
import signal
import threading

from foldserve.server.app import RunningServer, address
from foldserve.server.config import ServeConfig

log = logging.getLogger(__name__)


def log_serving(
    config: ServeConfig,
    ports: tuple[int, int],
    metrics_port: int | None,
    running: RunningServer | None,
) -> None:
    """The line that says the server is up, with its (gRPC, HTTP) `ports` (tests and tools read
    `grpc_port=` and `http_port=`)."""
    port, http_port = ports
    if running is None:
        models = "(per worker)"
    else:
        versions = [f"{m.name}:{m.latest.version}" for m in running.repository]
        models = ",".join(versions) or "(none loaded)"
    source = config.model_repository or config.model
    log.info(
        "serving %s from %s on %s workers=%d grpc_port=%d http_port=%d metrics_port=%s",
        models,
        source,
        address(config.host, port),
        config.worker_count,
        port,
        http_port,
        metrics_port,
        extra={
            "models": models,
            "workers": config.worker_count,
            "grpc_port": port,
            "http_port": http_port,
            "metrics_port": metrics_port,
        },
    )


def serve_until_signalled(running: RunningServer, config: ServeConfig) -> None:
    """Serve until SIGTERM/SIGINT (SIGHUP: look at the model repository and the TLS and token
    files now), then drain."""
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda number, _frame: stop.set())
    signal.signal(signal.SIGHUP, lambda number, _frame: running.look_again())
    while not stop.wait(1.0):
        pass
    log.info(
        "signal received: draining (delay %.1f s, grace %.1f s)",
        config.drain_delay_seconds,
        config.grace_seconds,
    )
    running.drain(config.grace_seconds, config.drain_delay_seconds)
    log.info("stopped")
