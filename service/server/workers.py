"""`foldserve serve --workers N`: N server processes on one port, under one supervisor.

One Python process serves what one core can (the GIL), so N workers each run a whole server —
model, core, gRPC — and bind the same port with SO_REUSEPORT, which the kernel balances per
connection (grpc's own `multiprocessing` example does the same). The supervisor, this module,
reserves the port, starts the workers (spawned, never forked: gRPC does not survive a fork),
serves the metrics of all of them from prometheus_client's multiprocess files, passes SIGHUP on
(every worker reloads the repository), restarts a worker that dies, and on SIGTERM/SIGINT has
every worker drain and exits 0 once all have. A worker that keeps dying stops the server.
"""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.connection
import os
import shutil
import signal
import socket
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import replace
from multiprocessing.process import BaseProcess
from queue import Empty

from foldserve.server.config import ServeConfig
from foldserve.server.model_control import ControlRelay
from foldserve.server.ports import ServeError, probe

WORKER_START_SECONDS = 120.0  # a worker that has not started by then stops the server
WORKER_RESTARTS = 5  # more deaths than this in a minute stop the server


log = logging.getLogger(__name__)
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


class WorkerError(Exception):
    """The workers could not start; the message is the first worker's reason."""


@contextmanager
def reserved_port(host: str, port: int):
    """Reserve (host, port) for the workers (port 0: a free one); yields the port.

    A plain bind first, which fails while anything listens there (another foldserve with
    workers included: SO_REUSEPORT alone would let two servers share the port silently); then
    a socket bound with SO_REUSEPORT stays bound, so the port stays ours while the workers bind
    it beside each other.
    """
    try:
        port = probe(host, port)
    except ServeError as exc:
        raise WorkerError(str(exc)) from None
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host.strip("[]"), port))
        yield port
    finally:
        sock.close()


class Supervisor:
    """Starts, watches and stops the worker processes.

    Args:
        config: the settings; `config.port` is the reserved port, every worker binds it.
        count: how many workers.
    """

    def __init__(self, config: ServeConfig, count: int) -> None:
        self._config = config
        self._count = count
        self._context = multiprocessing.get_context("spawn")
        self._events = self._context.Queue()
        self._workers: list[BaseProcess] = []
        self._inboxes: list = []  # each worker's queue of model control commands
        self._recent: list[float] = []
        self.restarts = 0
        self.stopping = threading.Event()
        # Model control across workers (explicit mode): the models a new worker loads.
        self.relay = ControlRelay(
            self._events, self.inboxes, list(config.load_model), threading.Lock()
        )

    def start(self) -> None:
        """Start every worker and wait until each serves.

        Raises:
            WorkerError: a worker could not start (its reason), or none came up in time.
        """
        self._inboxes = [None] * self._count
        self._workers = [self._spawn(index) for index in range(self._count)]
        ready = 0
        deadline = time.monotonic() + WORKER_START_SECONDS
        while ready < self._count:
            kind, _pid, detail = self._next_event(deadline)
            if kind == "error":
                self.stop(0)
                raise WorkerError(detail)
            ready += kind == "ready"
        self.relay.start()  # from now on it reads the workers' events

    def _next_event(self, deadline: float) -> tuple[str, int, str]:
        try:
            return self._events.get(timeout=max(deadline - time.monotonic(), 0.01))
        except Empty:
            self.stop(0)
            raise WorkerError(f"workers did not start in {WORKER_START_SECONDS:.0f} s") from None

    def _spawn(self, index: int) -> BaseProcess:
        from foldserve.server.worker import run_worker

        with self.relay.lock:  # no command passes between reading `loaded` and the new inbox
            config = replace(self._config, load_model=tuple(self.relay.loaded))
            self._inboxes[index] = inbox = self._context.Queue()
            self.relay.replay(inbox)
            process = self._context.Process(
                target=run_worker,
                args=(config, self._events, inbox),
                name=f"foldserve-worker-{index}",
                daemon=False,
            )
            process.start()
        return process

    def inboxes(self) -> dict:
        """The model control queue of every live worker, by pid."""
        return {
            p.pid: inbox
            for p, inbox in zip(self._workers, self._inboxes, strict=False)
            if p.is_alive() and p.pid is not None
        }

    def wait(self, timeout: float) -> None:
        """Return as soon as a worker dies, or after `timeout` seconds."""
        by_sentinel = {p.sentinel: p for p in self._workers}
        for sentinel in multiprocessing.connection.wait(list(by_sentinel), timeout):
            by_sentinel[sentinel].join(1.0)  # its pipe closes a moment before it can be reaped

    def watch(self) -> bool:
        """Restart workers that died; False when they die too often to go on."""
        for index, process in enumerate(self._workers):
            if process.is_alive() or self.stopping.is_set():
                continue
            log.error(
                "worker %s (pid %s) died with exit code %s", index, process.pid, process.exitcode
            )
            _mark_dead(process.pid)
            now = time.monotonic()
            self._recent = [t for t in self._recent if now - t < 60] + [now]
            if len(self._recent) > WORKER_RESTARTS:
                log.error("workers died %d times in a minute: stopping", len(self._recent))
                return False
            self._workers[index] = self._spawn(index)
            self.restarts += 1
        return True

    def signal_all(self, signum: int) -> None:
        for process in self._workers:
            if process.is_alive():
                os.kill(process.pid, signum)

    def stop(self, grace: float) -> bool:
        """SIGTERM every worker (each drains for `grace`); True when all exited 0."""
        self.stopping.set()
        self.signal_all(signal.SIGTERM)
        clean = True
        for process in self._workers:
            process.join(grace + 10)
            if process.is_alive():
                process.kill()
                process.join(5)
            clean = clean and process.exitcode == 0
        return clean

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self._workers if p.pid is not None]

    @property
    def alive(self) -> int:
        return sum(p.is_alive() for p in self._workers)


def _mark_dead(pid: int | None) -> None:
    """Drop a dead worker's live gauges from the shared metrics (its counters stay counted)."""
    if pid is not None and os.environ.get(MULTIPROC_ENV):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)


@contextmanager
def shared_metrics_dir():
    """A fresh directory for prometheus_client's multiprocess files, set for the workers."""
    folder = tempfile.mkdtemp(prefix="foldserve-metrics-")
    previous = os.environ.get(MULTIPROC_ENV)
    os.environ[MULTIPROC_ENV] = folder
    try:
        yield folder
    finally:
        if previous is None:
            os.environ.pop(MULTIPROC_ENV, None)
        else:
            os.environ[MULTIPROC_ENV] = previous
        shutil.rmtree(folder, ignore_errors=True)


def worker_config(config: ServeConfig, ports: tuple[int, int]) -> ServeConfig:
    """What each worker serves with: the reserved (gRPC, HTTP) ports, shared; no metrics HTTP."""
    return replace(
        config, port=ports[0], http_port=ports[1], workers=1, instances=config.worker_count
    )
