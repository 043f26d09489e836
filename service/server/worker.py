"""One worker of `foldserve serve --workers N`: a whole server on the shared port, started by the
supervisor (`foldserve.server.workers`) in a spawned process."""

from __future__ import annotations

import os
import signal
import sys
from multiprocessing.queues import Queue

from prometheus_client import CollectorRegistry, disable_created_metrics

from foldserve.core.metric_files import MetricFiles
from foldserve.core.model import ModelError
from foldserve.core.orphans import when_orphaned
from foldserve.server.app import ServeError, start_server
from foldserve.server.config import ServeConfig
from foldserve.server.lifecycle import serve_until_signalled
from foldserve.server.logs import setup_logging
from foldserve.server.model_control import WorkerControl
from foldserve.server.workers import MULTIPROC_ENV


def run_worker(config: ServeConfig, events: Queue, inbox: Queue) -> None:
    """Serve on `config.port` (shared with the other workers) until SIGTERM/SIGINT.

    Tells the supervisor ("ready", pid, "") once serving, or ("error", pid, reason) and exits 2.
    Model control goes through the supervisor to every worker (`events` out, `inbox` in:
    `foldserve.server.model_control`).
    """
    setup_logging(config.log_level, config.log_format)
    _stop_when_orphaned(os.getppid())
    disable_created_metrics()
    # Before any metric exists: series of unloaded versions must not stay in the files.
    MetricFiles(os.environ[MULTIPROC_ENV]).install()
    control = WorkerControl(events, inbox)
    try:
        running = start_server(
            config, CollectorRegistry(), serve_metrics_http=False, share_port=True, control=control
        )
    except (ModelError, ServeError) as exc:
        events.put(("error", os.getpid(), str(exc)))
        sys.exit(2)
    events.put(("ready", os.getpid(), ""))
    serve_until_signalled(running, config)
    sys.exit(0)


def _stop_when_orphaned(supervisor: int) -> None:
    """Drain and exit (as on SIGTERM) once the supervisor is gone.

    A supervisor killed outright (SIGKILL, the OOM killer, a test's teardown) cannot stop its
    workers: they would go on serving the shared port, holding memory and the metric files,
    with nobody to restart or stop them. The kernel gives an orphan a new parent, which is how
    one notices.
    """
    when_orphaned(supervisor, lambda: os.kill(os.getpid(), signal.SIGTERM))
