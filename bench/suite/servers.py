"""The servers under test, each in its own process: the echo floor and the bare model server on
each runtime asked for, `foldserve serve` (once per `--workers` count) and a peer model server
(`--peer`), started together and stopped together. Each spec names the workloads it is measured
on: the baselines serve the gRPC ones, foldserve every one (REST on the port it reports as
`http_port=N`), a peer the V2 ones.

A server that does not come up is not an exception for the whole run: `start_all` returns a
`ServerStartError` in its place (with its exit code and the end of its output), so the suite can
report, say, a `foldserve serve` that does not accept `--workers` yet and measure the rest.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from foldserve.bench.baselines.runtimes import RUNTIMES
from foldserve.bench.suite.cpu import tree_cpu_seconds
from foldserve.bench.suite.plan import BARE, BASELINE_KINDS, ECHO
from foldserve.bench.suite.workloads import GRPC_UNARY, HTTP, REST, STREAM, Workload

STARTUP_SECONDS = 60.0
STOP_SECONDS = 15.0
PORT = re.compile(r"grpc_port=(\d+)")
HTTP_PORT = re.compile(r"http_port=(\d+)")
FOLDSERVE = "foldserve"
BASELINE_WORKLOADS = (*GRPC_UNARY, STREAM)
FOLDSERVE_WORKLOADS = (*GRPC_UNARY, *REST, STREAM)


class NoHttpPort(RuntimeError):
    """A REST workload for a server that reported no HTTP port."""


class ServerStartError(RuntimeError):
    """A server process exited or printed no `grpc_port=N` in time; the message says which.

    `reason` is its one-line summary (for tables).
    """

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class ServerSpec:
    """How to start one server under test, and what it is measured on.

    A server that takes its ports from its own settings (a peer) gives them in `ports` (gRPC,
    HTTP) and is up once every line of `ready` has appeared in its output; any other prints
    `grpc_port=N` (and `http_port=N` where it serves REST) when it is up.
    """

    name: str
    command: tuple[str, ...]
    workers: int = 1
    env: tuple[tuple[str, str], ...] = ()  # set for this server only
    workloads: tuple[str, ...] = BASELINE_WORKLOADS
    ports: tuple[int, int] | None = None
    ready: tuple[str, ...] = ()


@dataclass
class Server:
    """A running server process and the ports it serves on (`http_port` None: no REST)."""

    spec: ServerSpec
    process: subprocess.Popen
    port: int
    http_port: int | None = None

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def target_for(self, workload: Workload) -> str:
        """host:port that serves `workload` (its HTTP port for a REST one).

        Raises:
            NoHttpPort: a REST workload, and the server reported no HTTP port.
        """
        if workload.protocol != HTTP:
            return self.target
        if self.http_port is None:
            raise NoHttpPort("no http_port= on its startup line (its serve has no REST port yet)")
        return f"127.0.0.1:{self.http_port}"

    def cpu_seconds(self) -> float:
        """CPU seconds used so far by the server and its worker processes."""
        return tree_cpu_seconds(self.process.pid)


def workers_name(workers: int) -> str:
    """The name of the foldserve server run with `workers` worker processes."""
    return FOLDSERVE if workers == 1 else f"{FOLDSERVE}-w{workers}"


def baseline_name(kind: str, runtime: str) -> str:
    """The name of a baseline server (`echo`, `bare`) on a runtime: `echo-sync`, …"""
    return f"{kind}-{runtime}"


def kind_of(name: str) -> str:
    """`echo`, `bare`, `foldserve` or a peer's name, for a server's name."""
    return name.split("-", 1)[0]


def baseline_specs(
    model: str,
    limit: int,
    kinds: Sequence[str] = BASELINE_KINDS,
    runtimes: Sequence[str] = RUNTIMES,
) -> list[ServerSpec]:
    """Each baseline of `kinds` (echo, bare) on each of `runtimes`, serving `limit` calls at once
    (`--max-concurrent-rpcs`), in table order: kind by kind, runtime by runtime."""
    python = sys.executable
    modules = {
        ECHO: ("foldserve.bench.baselines.echo",),
        BARE: ("foldserve.bench.baselines.bare_server", "--model", model),
    }
    limits = ("--max-concurrent-rpcs", str(limit))
    return [
        ServerSpec(
            baseline_name(kind, runtime),
            (python, "-m", *modules[kind], *limits, "--runtime", runtime),
        )
        for kind in BASELINE_KINDS
        if kind in kinds
        for runtime in RUNTIMES
        if runtime in runtimes
    ]


def foldserve_specs(model: str, workers: Sequence[int], limit: int) -> list[ServerSpec]:
    """foldserve once per worker count, serving `limit` calls at once.

    `--workers N` is passed only for N > 1, so a server that predates the flag still serves the
    one-worker run; that run gets FOLDSERVE_WORKERS=1, since `serve` now defaults to a worker per
    CPU (`auto`) and the baselines are one process each. Every run gets FOLDSERVE_HTTP_PORT=0
    (a free port) rather than `--http-port 0`: a serve without a REST port yet ignores the
    variable, serves gRPC, and its REST figures are reported missing.
    """
    python = sys.executable
    limits = ("--max-concurrent-rpcs", str(limit))
    local = ("--host", "127.0.0.1", "--port", "0", "--http-port", "0", "--metrics-port", "0")
    serve = (python, "-m", "foldserve.cli", "serve", "--model", model, *local, *limits)
    result = []
    for count in sorted(set(workers) | {1}):
        extra = ("--workers", str(count)) if count > 1 else ()
        env = (("FOLDSERVE_HTTP_PORT", "0"),)
        env += () if count > 1 else (("FOLDSERVE_WORKERS", "1"),)
        result.append(
            ServerSpec(workers_name(count), (*serve, *extra), count, env, FOLDSERVE_WORKLOADS)
        )
    return result


def specs(
    model: str,
    workers: Sequence[int],
    limit: int,
    kinds: Sequence[str] = BASELINE_KINDS,
    runtimes: Sequence[str] = RUNTIMES,
) -> list[ServerSpec]:
    """The baselines (`baseline_specs`), then foldserve once per worker count."""
    return baseline_specs(model, limit, kinds, runtimes) + foldserve_specs(model, workers, limit)


def _environment(spec: ServerSpec) -> dict[str, str]:
    # A FOLDSERVE_* (or a peer's MLSERVER_*) variable of the caller's shell would change what
    # is measured.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FOLDSERVE_", "MLSERVER_"))}
    return {**env, "PYTHONUNBUFFERED": "1", **dict(spec.env)}


@dataclass
class _Starting:
    spec: ServerSpec
    process: subprocess.Popen
    log: Path
    result: Server | ServerStartError | None = field(default=None)


def _up(spec: ServerSpec, text: str) -> tuple[int, int | None] | None:
    """(gRPC port, HTTP port or None) once the output `text` says the server is up."""
    if spec.ports is not None:
        return spec.ports if all(line in text for line in spec.ready) else None
    # Whole lines only (one may be half written); the line that carries the gRPC port carries
    # the HTTP one, or there is none.
    for line in text.splitlines(keepends=True):
        match = PORT.search(line)
        if match and line.endswith("\n"):
            http = HTTP_PORT.search(line)
            return int(match.group(1)), int(http.group(1)) if http else None
    return None


def _poll(starting: _Starting, deadline: float) -> None:
    text = starting.log.read_text(errors="replace")
    ports = _up(starting.spec, text)
    if ports:
        starting.result = Server(starting.spec, starting.process, *ports)
        return
    code = starting.process.poll()
    if code is None and time.monotonic() < deadline:
        return
    lines = text.strip().splitlines() or ["(no output)"]
    why = f"exited with code {code}" if code is not None else f"not up in {STARTUP_SECONDS} s"
    command = " ".join(starting.spec.command[1:])
    reason = f"did not start ({why}): {lines[-1]}"
    if "unrecognized arguments: --workers" in text:
        reason = "did not start: this foldserve serve does not accept --workers yet"
    message = f"{starting.spec.name} ({command}) {why}:\n" + "\n".join(lines[-6:])
    starting.result = ServerStartError(message, reason)


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        process.wait(STOP_SECONDS)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(STOP_SECONDS)


@contextmanager
def start_all(
    server_specs: Sequence[ServerSpec], logs: Path
) -> Iterator[dict[str, Server | ServerStartError]]:
    """Start every server at once (startup overlaps); yield each, or why it did not start.

    Every process is stopped (SIGTERM, then SIGKILL) on exit. Their output goes to `logs`.
    """
    starting: list[_Starting] = []
    try:
        for spec in server_specs:
            log = Path(tempfile.mkstemp(prefix=f"{spec.name}-", suffix=".log", dir=logs)[1])
            with log.open("w") as sink:
                process = subprocess.Popen(
                    spec.command, stdout=sink, stderr=subprocess.STDOUT, env=_environment(spec)
                )
            starting.append(_Starting(spec, process, log))
        deadline = time.monotonic() + STARTUP_SECONDS
        while any(entry.result is None for entry in starting):
            for entry in starting:
                if entry.result is None:
                    _poll(entry, deadline)
            time.sleep(0.05)
        yield {entry.spec.name: entry.result for entry in starting}  # type: ignore[misc]
    finally:
        for entry in starting:
            _stop(entry.process)


@contextmanager
def started(command: Sequence[str], name: str = "server") -> Iterator[Server]:
    """Start one server process and yield it; stopped on exit.

    Raises:
        ServerStartError: it exited, or printed no `grpc_port=N` in time.
    """
    spec = ServerSpec(name, tuple(command))
    with (
        tempfile.TemporaryDirectory(prefix="foldserve-") as logs,
        start_all([spec], Path(logs)) as servers,
    ):
        server = servers[name]
        if isinstance(server, ServerStartError):
            raise server
        yield server
