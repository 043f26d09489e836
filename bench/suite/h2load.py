"""The load generator: nghttp2's `h2load`, a C HTTP/2 client, sending prebuilt gRPC bodies, and
in its HTTP/1.1 mode (`--h1`) the V2 REST bodies.

Why h2load and not Python clients: on a small machine a grpcio client spends about as much CPU
per call as the server it measures, and would share the cores the server needs; h2load sends
the same bytes for a few µs of CPU per call from one thread (its own CPU is measured and
reported, from `wait4`). It keeps exactly `connections × streams` calls in flight, runs for a
count of calls (`-n`) or a bounded time (`-D`), and logs every call's start and duration.

What h2load cannot see, a gRPC status in the trailers, is checked by the reply bytes: each OK
call brings back exactly the reply `workloads.reply_bytes` measured; an error brings none. Over
HTTP/1.1 a call is one request on a keep-alive connection (no pipelining: one call in flight per
connection, as HTTP/1.1 clients do), and a status other than 2xx counts as failed.

Why h2load for REST too, rather than wrk: the same client for both protocols (one thread, the
same per-call log, the same CPU accounting from `wait4`), bodies from a file with `-d` and
headers with `-H`, and no Lua script to write a POST; wrk reports a latency summary, not each
call.
Debian/Ubuntu: `apt-get install nghttp2-client`; macOS: `brew install nghttp2`.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from foldserve.bench.suite.cpu import rusage_seconds
from foldserve.bench.suite.workloads import HTTP, Workload

# Past a run's own length (calls at 1 ms, or its duration), the margin before it is killed.
TIMEOUT_MARGIN_SECONDS = 60.0
_DONE = re.compile(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded")
_DATA = re.compile(r"traffic: .*?\((\d+)\) data")


class LoadError(RuntimeError):
    """h2load is missing, failed, or calls came back without their replies."""


class NoCallsError(LoadError):
    """A run in which no call completed."""


@dataclass(frozen=True)
class LoadRun:
    """What one h2load run measured."""

    latencies_us: np.ndarray  # per call (a stream: the whole stream), in µs
    starts_us: np.ndarray  # per call, µs since the epoch
    done: int
    data_bytes: int
    client_cpu_seconds: float

    @property
    def span_seconds(self) -> float:
        """From the first call's start to the last call's end."""
        if not self.done:
            return 0.0
        ends = self.starts_us + self.latencies_us
        return float(ends.max() - self.starts_us.min()) / 1e6


def find(path: str | None = None) -> str:
    """The h2load executable: `path`, or the one on PATH.

    Raises:
        LoadError: none found (the message says which package has it).
    """
    found = shutil.which(path or "h2load")
    if not found:
        raise LoadError(
            f"{path or 'h2load'} not found: the benchmark's load generator is nghttp2's h2load "
            "(Debian/Ubuntu: apt-get install nghttp2-client; macOS: brew install nghttp2)"
        )
    return found


def _read_log(log: Path) -> tuple[np.ndarray, np.ndarray]:
    if not log.exists() or log.stat().st_size == 0:
        return np.empty(0), np.empty(0)
    table = np.loadtxt(log, dtype=np.float64, ndmin=2)
    return table[:, 0], table[:, 2]


class H2Load:
    """Runs h2load against a server; files it needs go in `workdir`.

    Args:
        binary: the h2load executable (`find()`).
        workdir: a scratch directory (request bodies, per-call logs).
    """

    def __init__(self, binary: str, workdir: Path) -> None:
        self._binary = binary
        self._workdir = workdir
        self._bodies: dict[Workload, Path] = {}

    def _body(self, workload: Workload) -> Path:
        if workload not in self._bodies:
            path = self._workdir / f"body-{len(self._bodies)}.bin"
            path.write_bytes(workload.body)
            self._bodies[workload] = path
        return self._bodies[workload]

    def _command(
        self, workload: Workload, url: str, log: Path, count: str, connections: int, streams: int
    ) -> list[str]:
        headers = [arg for header in workload.request_headers for arg in ("-H", header)]
        return [
            self._binary,
            *(["--h1"] if workload.protocol == HTTP else []),
            "-t",
            "1",
            "-c",
            str(connections),
            "-m",
            str(streams),
            *count.split(),
            "-d",
            str(self._body(workload)),
            *headers,
            f"--log-file={log}",
            url,
        ]

    def run(
        self,
        target: str,
        workload: Workload,
        reply_bytes: int,
        *,
        calls: int | None = None,
        duration: float | None = None,
        connections: int = 1,
        streams: int = 1,
    ) -> LoadRun:
        """Send `calls` calls (or as many as fit in `duration` seconds), `connections × streams`
        at a time (an HTTP workload: give `streams` 1), and return the per-call figures.

        Raises:
            LoadError: h2load failed or timed out, or replies were missing (gRPC errors).
        """
        if (calls is None) == (duration is None):
            raise ValueError("give calls or duration")
        count = f"-n {calls}" if calls is not None else f"-D {max(round(duration * 1000), 1)}ms"
        budget = (calls * 0.001 * workload.messages if calls else duration) or 0.0
        log = self._workdir / "calls.log"
        log.unlink(missing_ok=True)  # h2load appends to an existing log
        url = f"http://{target}{workload.path}"
        command = self._command(workload, url, log, count, connections, streams)
        output = self._workdir / "h2load.out"
        with output.open("w") as sink:
            process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT)
        timer = threading.Timer(budget + TIMEOUT_MARGIN_SECONDS, process.kill)
        timer.start()
        try:
            _, status, usage = os.wait4(process.pid, 0)
        finally:
            timer.cancel()
        process.returncode = os.waitstatus_to_exitcode(status)
        text = output.read_text(errors="replace")
        return self._result(text, process.returncode, log, usage, workload, reply_bytes)

    def _result(self, text, code, log, usage, workload, reply_bytes) -> LoadRun:
        done, data = _DONE.search(text), _DATA.search(text)
        if code != 0 or not done or not data:
            tail = "\n".join(text.strip().splitlines()[-8:])
            raise LoadError(f"h2load exited with code {code} on {workload.name}:\n{tail}")
        completed, received = int(done.group(3)), int(data.group(1))
        if not completed:
            raise NoCallsError(f"{workload.name}: no call completed; is the server still up?")
        succeeded = int(done.group(4))
        if succeeded != completed or received < completed * reply_bytes:
            missing = completed - received // reply_bytes if reply_bytes else completed
            why = "a gRPC error" if workload.protocol != HTTP else "an HTTP error or a short body"
            raise LoadError(
                f"{workload.name}: {max(missing, completed - succeeded)} of {completed} calls came "
                f"back without their reply ({received} bytes of data, {reply_bytes} expected per "
                f"call): the server answered them with {why}"
            )
        starts, latencies = _read_log(log)
        return LoadRun(latencies, starts, completed, received, rusage_seconds(usage))
