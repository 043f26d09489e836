"""The servers under test, each in its own process: the echo floor, the bare model server and
`foldserve serve` (once per `--workers` count), started together and stopped together.

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

from foldserve.bench.suite.cpu import tree_cpu_seconds

STARTUP_SECONDS = 60.0
STOP_SECONDS = 15.0
PORT = re.compile(r"grpc_port=(\d+)")
ECHO, BARE, FOLDSERVE = "echo", "bare", "foldserve"
# The order of the servers in every table; rounds rotate the order they are measured in.
BASELINES = (ECHO, BARE, FOLDSERVE)
LABELS = {ECHO: "echo floor", BARE: "bare model server", FOLDSERVE: "foldserve"}


class ServerStartError(RuntimeError):
    """A server process exited or printed no `grpc_port=N` in time; the message says which.

    `reason` is its one-line summary (for tables).
    """

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class ServerSpec:
    """How to start one server under test."""

    name: str
    command: tuple[str, ...]
    workers: int = 1
    env: tuple[tuple[str, str], ...] = ()  # set for this server only


@dataclass
class Server:
    """A running server process and the port it serves on."""

    spec: ServerSpec
    process: subprocess.Popen
    port: int

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def cpu_seconds(self) -> float:
        """CPU seconds used so far by the server and its worker processes."""
        return tree_cpu_seconds(self.process.pid)


def workers_name(workers: int) -> str:
    """The name of the foldserve server run with `workers` worker processes."""
    return FOLDSERVE if workers == 1 else f"{FOLDSERVE}-w{workers}"


def specs(model: str, workers: Sequence[int], limit: int) -> list[ServerSpec]:
    """The echo floor, the bare model server and foldserve once per worker count, each serving
    `limit` calls at once (`--max-concurrent-rpcs`).

    `--workers N` is passed only for N > 1, so a server that predates the flag still serves the
    one-worker run; that run gets FOLDSERVE_WORKERS=1, since `serve` now defaults to a worker per
    CPU (`auto`) and the baselines are one process each.
    """
    python = sys.executable
    limits = ("--max-concurrent-rpcs", str(limit))
    local = ("--host", "127.0.0.1", "--port", "0", "--http-port", "0", "--metrics-port", "0")
    serve = (python, "-m", "foldserve.cli", "serve", "--model", model, *local, *limits)
    result = [
        ServerSpec(ECHO, (python, "-m", "foldserve.bench.baselines.echo", *limits)),
        ServerSpec(
            BARE, (python, "-m", "foldserve.bench.baselines.bare_server", "--model", model, *limits)
        ),
    ]
    for count in sorted(set(workers) | {1}):
        extra = ("--workers", str(count)) if count > 1 else ()
        env = () if count > 1 else (("FOLDSERVE_WORKERS", "1"),)
        result.append(ServerSpec(workers_name(count), (*serve, *extra), count, env))
    return result


def _environment(spec: ServerSpec) -> dict[str, str]:
    # A FOLDSERVE_* variable of the caller's shell would change what is measured.
    env = {k: v for k, v in os.environ.items() if not k.startswith("FOLDSERVE_")}
    return {**env, "PYTHONUNBUFFERED": "1", **dict(spec.env)}


@dataclass
class _Starting:
    spec: ServerSpec
    process: subprocess.Popen
    log: Path
    result: Server | ServerStartError | None = field(default=None)


def _poll(starting: _Starting, deadline: float) -> None:
    text = starting.log.read_text(errors="replace")
    match = PORT.search(text)
    if match:
        starting.result = Server(starting.spec, starting.process, int(match.group(1)))
        return
    code = starting.process.poll()
    if code is None and time.monotonic() < deadline:
        return
    lines = text.strip().splitlines() or ["(no output)"]
    why = f"exited with code {code}" if code is not None else f"no port in {STARTUP_SECONDS} s"
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
