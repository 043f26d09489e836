"""The rounds of `foldserve bench`: every measurement against every server, alternating.

One round measures everything once: sequential calls of each method, each level of calls in
flight, one stream and several, foldserve at each worker count. Within a measurement the servers
that serve the workload take turns, in an order that rotates from round to round, so that load
from elsewhere on the machine lands on all of them alike and no server is always measured first.
A REST workload keeps its calls in flight on as many HTTP/1.1 connections, one call each.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from foldserve.bench.suite.h2load import H2Load
from foldserve.bench.suite.measure import Load, Measurement, measure, warm_up
from foldserve.bench.suite.plan import Plan
from foldserve.bench.suite.servers import Server
from foldserve.bench.suite.workloads import HTTP, PREDICT, STREAM, UNARY, Workload

SEQUENTIAL, IN_FLIGHT, STREAMS, WORKERS = "sequential", "in_flight", "streams", "workers"
# (section, workload, server, level): level is calls in flight, streams, or worker processes.
Key = tuple[str, str, str, int]


@dataclass
class Collected:
    """Every round's figures of every measurement (None for a round that failed)."""

    rounds: dict[Key, list[dict[str, float | None] | None]] = field(
        default_factory=lambda: defaultdict(list)
    )
    errors: dict[Key, str] = field(default_factory=dict)
    # Sequential latencies of every round, by (workload, server): the latency CDF.
    latencies: dict[tuple[str, str], list[np.ndarray]] = field(
        default_factory=lambda: defaultdict(list)
    )

    def add(self, key: Key, measurement: Measurement) -> None:
        self.rounds[key].append(None if measurement.error else measurement.figures)
        if measurement.error:
            self.errors.setdefault(key, measurement.error)


@dataclass
class Bench:
    """What the rounds run: the plan, the load generator, the servers and their workloads.

    `servers` holds every server by name, in table order; `serving` the names of those that
    answer each workload, in the same order; `replies` the reply bytes of each (server name,
    workload name), as checked.
    """

    plan: Plan
    generator: H2Load
    servers: dict[str, Server]
    workers: dict[int, Server]
    workloads: dict[str, Workload]
    replies: dict[tuple[str, str], int]
    serving: dict[str, list[str]]
    say: Callable[[str], None] = print

    def measure(self, name: str, server: Server, load: Load, warm: Load | None) -> Measurement:
        workload, reply = self.workloads[name], self.replies[(server.spec.name, name)]
        target = server.target_for(workload)
        if warm is not None:
            warm_up(self.generator, target, workload, reply, warm)
        return measure(self.generator, server, target, workload, reply, load)

    def unary(self) -> list[str]:
        """The unary workloads some server answers, in table order."""
        return [name for name in UNARY if self.serving.get(name)]


def _order(names: Sequence, index: int) -> list:
    return [*names[index % len(names) :], *names[: index % len(names)]]


def _line(label: str, results: dict[str, Measurement], figure: str, unit: str) -> str:
    cells = []
    for name, result in results.items():
        if result.error:
            cells.append(f"{name} FAILED")
            continue
        value, cpu = result.figures[figure], result.figures["server_cpu_us_per_example"]
        cpu_text = "" if cpu is None else f" ({cpu:,.0f} µs CPU)"
        cells.append(f"{name} {value or 0:,.0f} {unit}{cpu_text}")
    return f"  {label:<30} " + " | ".join(cells)


def _take_turns(
    bench: Bench,
    collected: Collected,
    index: int,
    name: str,
    key: Callable[[str], Key],
    loads: tuple[Load, Load | None],
) -> dict[str, Measurement]:
    """Measure workload `name` on every server that serves it, in this round's order; return
    the results in table order."""
    results = {}
    for server_name in _order(bench.serving[name], index):
        result = bench.measure(name, bench.servers[server_name], *loads)
        results[server_name] = result
        collected.add(key(server_name), result)
    return {n: results[n] for n in bench.serving[name]}


def _sequential(bench: Bench, index: int, collected: Collected) -> None:
    plan = bench.plan
    loads = (Load(calls=plan.calls), Load(calls=plan.warmup))
    for name in bench.unary():
        results = _take_turns(
            bench, collected, index, name, lambda s, n=name: (SEQUENTIAL, n, s, 1), loads
        )
        for server_name, result in results.items():
            collected.latencies[(name, server_name)].append(result.latencies_us)
        bench.say(_line(f"sequential {name}", results, "p50_us", "µs p50"))


def _in_flight(bench: Bench, index: int, collected: Collected) -> None:
    plan = bench.plan
    for level in plan.in_flight:
        for name in bench.unary():
            multiplexed = bench.workloads[name].protocol != HTTP
            connections, streams = plan.split(level, multiplexed)
            loads = (
                Load(duration=plan.duration, connections=connections, streams=streams),
                Load(duration=plan.warmup_seconds, connections=connections, streams=streams),
            )
            results = _take_turns(
                bench,
                collected,
                index,
                name,
                lambda s, n=name, lv=level: (IN_FLIGHT, n, s, lv),
                loads,
            )
            bench.say(_line(f"{level:>2} in flight {name}", results, "calls_per_s", "calls/s"))


def _streams(bench: Bench, index: int, collected: Collected) -> None:
    if not bench.serving.get(STREAM):
        return
    for count in sorted({1, bench.plan.streams}):
        loads = (Load(calls=count, connections=count), None)
        results = _take_turns(
            bench, collected, index, STREAM, lambda s, c=count: (STREAMS, STREAM, s, c), loads
        )
        bench.say(_line(f"{count} PredictStream", results, "examples_per_s", "examples/s"))


def _workers(bench: Bench, index: int, collected: Collected) -> None:
    if not bench.workers:
        return
    plan = bench.plan
    connections, streams = plan.split(plan.target_in_flight)
    load = Load(duration=plan.duration, connections=connections, streams=streams)
    warm = Load(duration=plan.warmup_seconds, connections=connections, streams=streams)
    results = {}
    for count in _order(sorted(bench.workers), index):
        server = bench.workers[count]
        result = bench.measure(PREDICT, server, load, warm)
        collected.add((WORKERS, PREDICT, server.spec.name, count), result)
        results[f"{count} workers"] = result
    bench.say(
        _line(f"{plan.target_in_flight} in flight, workers", results, "calls_per_s", "calls/s")
    )


def run_rounds(bench: Bench) -> Collected:
    """Run every round of the plan; failed measurements are kept with their error."""
    collected = Collected()
    for index in range(bench.plan.rounds):
        bench.say(f"round {index + 1}/{bench.plan.rounds}")
        for section in (_sequential, _in_flight, _streams, _workers):
            section(bench, index, collected)
    return collected
