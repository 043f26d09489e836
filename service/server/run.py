"""`foldserve serve`: load the model, start the server, serve until SIGTERM/SIGINT, then drain."""

from __future__ import annotations

import logging
import signal
import sys
import threading

from prometheus_client import CollectorRegistry, disable_created_metrics

from service.core.model import ModelError
from service.server.app import ServeError, address, start_server
from service.server.config import ServeConfig
from service.server.logs import setup_logging

log = logging.getLogger(__name__)


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
        running = start_server(config, CollectorRegistry())
    except (ModelError, ServeError) as exc:
        print(f"foldserve serve: error: {exc}", file=sys.stderr, flush=True)
        return 2
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda number, _frame: stop.set())
    signal.signal(signal.SIGHUP, lambda number, _frame: running.reloader.trigger())
    model = running.repository.latest.model
    log.info(
        "serving model %s version %s from %s on %s grpc_port=%d metrics_port=%s",
        model.name,
        model.version,
        running.repository.source,
        address(config.host, running.port),
        running.port,
        running.metrics_port,
        extra={
            "model": model.name,
            "model_version": model.version,
            "grpc_port": running.port,
            "metrics_port": running.metrics_port,
        },
    )
    while not stop.wait(1.0):
        pass
    log.info(
        "signal received: draining (delay %.1f s, grace %.1f s)",
        config.drain_delay_seconds,
        config.grace_seconds,
    )
    running.drain(config.grace_seconds, config.drain_delay_seconds)
    log.info("stopped")
    return 0
