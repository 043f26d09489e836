"""The supervisor's life: reserve the port, start the workers, serve their metrics, pass signals
on, restart the dead, drain them all at the end."""

from __future__ import annotations

import logging
import signal
import sys
import threading
from contextlib import nullcontext

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector

from foldserve.core.adapt.serving import shared_candidate_folder
from foldserve.core.metrics import INFO_METRIC
from foldserve.core.shift.shared import shared_state_dir
from foldserve.server.config import ServeConfig
from foldserve.server.lifecycle import log_serving
from foldserve.server.metrics_http import serve_metrics
from foldserve.server.workers import (
    Supervisor,
    WorkerError,
    reserved_port,
    shared_metrics_dir,
    worker_config,
)

log = logging.getLogger(__name__)
WATCH_SECONDS = 0.5


def serve_workers(config: ServeConfig) -> int:
    """Run `config.workers` workers on one port until SIGTERM/SIGINT, then drain them all.

    Returns:
        0 after every worker drained cleanly, 1 when workers kept dying or one did not exit
        cleanly, 2 when they could not start (the first worker's reason on stderr).
    """
    try:
        with (
            reserved_port(config.host, config.port) as port,
            reserved_port(config.host, config.http_port) as http_port,
            shared_metrics_dir() as folder,
            shared_state_dir(),
            shared_candidate_folder() if config.adapt_reservoir else nullcontext(),
        ):
            ports = (port, http_port)
            supervisor = Supervisor(worker_config(config, ports), config.worker_count)
            supervisor.start()
            return _supervise(config, ports, folder, supervisor)
    except WorkerError as exc:
        print(f"foldserve serve: error: {exc}", file=sys.stderr, flush=True)
        return 2


class SupervisorCollector:
    """The supervisor's own series: workers alive and restarts (the workers' series come from
    their multiprocess files)."""

    def __init__(self, model: str, supervisor: Supervisor) -> None:
        self._model = model
        self._supervisor = supervisor

    def collect(self):
        alive = GaugeMetricFamily(
            "foldserve_workers", "Server worker processes alive.", labels=["model"]
        )
        alive.add_metric([self._model], self._supervisor.alive)
        restarts = CounterMetricFamily(
            "foldserve_worker_restarts", "Worker processes restarted after dying.", labels=["model"]
        )
        restarts.add_metric([self._model], self._supervisor.restarts)
        return [alive, restarts]


class LoadedVersionsOnly:
    """The workers' series, without those of versions no live worker has loaded.

    An unloaded version's series stay in a worker's multiprocess file (frozen) until the worker
    compacts it (`foldserve.core.metric_files`), and in a dead worker's files for good; its
    `foldserve_model_info` turns 0 at once. Only the (model, version) pairs whose info is 1 in
    some live worker are shown; series without a version label always are, and so are those of
    calls refused before they named a served model (model and version "").
    """

    def __init__(self, folder: str) -> None:
        self._workers = MultiProcessCollector(None, path=folder)

    def collect(self):
        families = list(self._workers.collect())
        loaded = {
            (sample.labels.get("model"), sample.labels.get("version"))
            for family in families
            if family.name == INFO_METRIC
            for sample in family.samples
            if sample.value >= 1
        }
        loaded.add(("", ""))  # calls refused before they named a served model
        for family in families:
            family.samples = [
                s
                for s in family.samples
                if "version" not in s.labels
                or (s.labels.get("model"), s.labels["version"]) in loaded
            ]
        return families


def _supervise(
    config: ServeConfig, ports: tuple[int, int], folder: str, supervisor: Supervisor
) -> int:
    registry = CollectorRegistry()
    registry.register(LoadedVersionsOnly(folder))
    registry.register(SupervisorCollector(config.model_name, supervisor))
    try:
        metrics_http, metrics_port = serve_metrics(registry, config.host, config.metrics_port)
    except OSError as exc:
        supervisor.stop(0)
        raise WorkerError(f"cannot serve metrics on port {config.metrics_port}: {exc}") from None
    log_serving(config, ports, metrics_port, None)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda number, _frame: stop.set())
    signal.signal(signal.SIGHUP, lambda number, _frame: supervisor.signal_all(signal.SIGHUP))
    healthy = True
    # Woken by a worker's death (a restart starts at once) or every WATCH_SECONDS (a signal).
    while healthy and not stop.is_set():
        supervisor.wait(WATCH_SECONDS)
        if not stop.is_set():
            healthy = supervisor.watch()
    log.info("draining %d workers (grace %.1f s)", config.worker_count, config.grace_seconds)
    clean = supervisor.stop(config.grace_seconds)
    metrics_http.shutdown()  # type: ignore[attr-defined]
    log.info("stopped")
    return 0 if healthy and clean else 1
