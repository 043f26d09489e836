"""`foldserve serve`: load the model, start the server (or its workers), serve until
SIGTERM/SIGINT, then drain."""

from __future__ import annotations

import logging
import signal
import sys
import threading

from prometheus_client import CollectorRegistry, disable_created_metrics

from service.core.model import ModelError
from service.server.app import RunningServer, ServeError, address, start_server
from service.server.config import ServeConfig
from service.server.logs import setup_logging

log = logging.getLogger(__name__)


def serve(config: ServeConfig) -> int:
    """Run `foldserve serve` until SIGTERM/SIGINT, then drain.

    Returns:
        0 after a clean drain, 1 when workers kept dying, 2 when the server cannot start
        (message on stderr).
    """
    setup_logging(config.log_level, config.log_format)
    # A `_created` twin of every counter and histogram doubles the series for nothing a
    # dashboard or alert here reads.
    disable_created_metrics()
    if config.workers > 1:
        from service.server.supervise import serve_workers

        return serve_workers(config)
    try:
        running = start_server(config, CollectorRegistry())
    except (ModelError, ServeError) as exc:
        print(f"foldserve serve: error: {exc}", file=sys.stderr, flush=True)
        return 2
    log_serving(config, running.port, running.metrics_port, running)
    serve_until_signalled(running, config)
    return 0


def log_serving(
    config: ServeConfig, port: int, metrics_port: int | None, running: RunningServer | None
) -> None:
    """The line that says the server is up (tests and tools read `grpc_port=`)."""
    model = running.repository.latest.model if running is not None else None
    version = model.version if model is not None else "(per worker)"
    log.info(
        "serving model %s version %s from %s on %s workers=%d grpc_port=%d metrics_port=%s",
        config.model_name,
        version,
        config.model,
        address(config.host, port),
        config.workers,
        port,
        metrics_port,
        extra={
            "model": config.model_name,
            "model_version": version,
            "workers": config.workers,
            "grpc_port": port,
            "metrics_port": metrics_port,
        },
    )


def serve_until_signalled(running: RunningServer, config: ServeConfig) -> None:
    """Serve until SIGTERM/SIGINT (SIGHUP: reload the repository now), then drain."""
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda number, _frame: stop.set())
    signal.signal(signal.SIGHUP, lambda number, _frame: running.reloader.trigger())
    while not stop.wait(1.0):
        pass
    log.info(
        "signal received: draining (delay %.1f s, grace %.1f s)",
        config.drain_delay_seconds,
        config.grace_seconds,
    )
    running.drain(config.grace_seconds, config.drain_delay_seconds)
    log.info("stopped")
