"""`foldserve serve`: load the model, start the server (or its workers), serve until
SIGTERM/SIGINT, then drain."""

from __future__ import annotations

import logging
import sys

from prometheus_client import CollectorRegistry, disable_created_metrics

from foldserve.core.model import ModelError
from foldserve.server.app import ServeError, start_server
from foldserve.server.config import ServeConfig
from foldserve.server.lifecycle import log_serving, serve_until_signalled
from foldserve.server.logs import setup_logging

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
    if config.worker_count > 1:
        from foldserve.server.supervise import serve_workers

        if config.shared_memory:
            log.warning(
                "shared memory: each of the %d workers keeps its own regions; clients must "
                "register theirs with every worker, or run --workers 1",
                config.worker_count,
            )

        return serve_workers(config)
    try:
        running = start_server(config, CollectorRegistry())
    except (ModelError, ServeError) as exc:
        print(f"foldserve serve: error: {exc}", file=sys.stderr, flush=True)
        return 2
    log_serving(config, (running.port, running.http_port), running.metrics_port, running)
    serve_until_signalled(running, config)
    return 0
