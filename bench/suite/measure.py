"""One measurement: a load generator run against one server, with both sides' CPU accounted.

The server's CPU is read from its processes before and after the run (so it includes whatever
the server does in the background meanwhile, which is its cost too); the load generator's from
its own rusage. Per-call figures divide by the calls answered, per-example ones by the examples
(a stream carries many).
"""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass

import numpy as np

from foldserve.bench.suite import cpu
from foldserve.bench.suite.h2load import H2Load, LoadError, LoadRun, NoCallsError
from foldserve.bench.suite.servers import Server
from foldserve.bench.suite.stats import percentiles
from foldserve.bench.suite.workloads import Workload


@dataclass(frozen=True)
class Load:
    """How much load a measurement puts on: a count of calls, or seconds of calls in flight."""

    calls: int | None = None
    duration: float | None = None
    connections: int = 1
    streams: int = 1

    @property
    def in_flight(self) -> int:
        return self.connections * self.streams


@dataclass(frozen=True)
class Measurement:
    """The figures of one measurement (or why it failed) and its per-call latencies."""

    figures: dict[str, float | None]
    latencies_us: np.ndarray
    error: str | None = None


def _per(total: float, count: int) -> float | None:
    return total / count * 1e6 if count else None


def _run(
    generator: H2Load, target: str, workload: Workload, reply_bytes: int, load: Load
) -> LoadRun:
    return generator.run(
        target,
        workload,
        reply_bytes,
        calls=load.calls,
        duration=load.duration,
        connections=load.connections,
        streams=load.streams,
    )


def measure(
    generator: H2Load, server: Server, target: str, workload: Workload, reply_bytes: int, load: Load
) -> Measurement:
    """Run `load` of `workload` against `server` at `target` (the port that serves it); a failed
    run is returned with its error.

    A timed run in which no call completed is run once more, five times longer (at least 1 s):
    on a starved machine a short window can end before the first answer.
    """
    try:
        return _measured(generator, server, target, workload, reply_bytes, load)
    except NoCallsError as exc:
        if load.duration is None:
            return Measurement({}, np.empty(0), str(exc))
        longer = dataclasses.replace(load, duration=max(5 * load.duration, 1.0))
        try:
            return _measured(generator, server, target, workload, reply_bytes, longer)
        except LoadError as again:
            return Measurement({}, np.empty(0), str(again))
    except LoadError as exc:
        return Measurement({}, np.empty(0), str(exc))


def _measured(
    generator: H2Load, server: Server, target: str, workload: Workload, reply_bytes: int, load: Load
) -> Measurement:
    before = server.cpu_seconds()
    run = _run(generator, target, workload, reply_bytes, load)
    used = server.cpu_seconds() - before if cpu.available() else None
    span = run.span_seconds
    examples = run.done * workload.messages
    figures: dict[str, float | None] = {
        "calls": float(run.done),
        "examples": float(examples),
        "seconds": span,
        "calls_per_s": run.done / span if span else None,
        "examples_per_s": examples / span if span else None,
        **percentiles(run.latencies_us),
        "server_cpu_us_per_call": None if used is None else _per(used, run.done),
        "server_cpu_us_per_example": None if used is None else _per(used, examples),
        "server_cpu_cores": None if used is None or not span else used / span,
        "client_cpu_us_per_call": _per(run.client_cpu_seconds, run.done),
        "client_cpu_us_per_example": _per(run.client_cpu_seconds, examples),
        # How much of a core the load generator needed: near 1, it would be the bottleneck.
        "client_cpu_cores": run.client_cpu_seconds / span if span else None,
    }
    return Measurement(figures, run.latencies_us)


def warm_up(
    generator: H2Load, target: str, workload: Workload, reply_bytes: int, load: Load
) -> None:
    """Untimed load, so the measurement after it finds threads started and caches warm."""
    # A warm-up that fails is not reported: the timed run after it fails the same way, and is.
    with contextlib.suppress(LoadError):
        _run(generator, target, workload, reply_bytes, load)
