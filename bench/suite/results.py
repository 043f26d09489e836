"""From the rounds to the figures the suite reports: each measurement's median and spread, its
ratios to the echo floor's, and the targets of the performance issue, all taken round by round.
"""

from __future__ import annotations

from foldserve.bench.suite.plan import Plan
from foldserve.bench.suite.rounds import IN_FLIGHT, SEQUENTIAL, STREAMS, WORKERS, Collected, Key
from foldserve.bench.suite.servers import ECHO, FOLDSERVE, workers_name
from foldserve.bench.suite.stats import ratio_spread, spread
from foldserve.bench.suite.workloads import PREDICT, STREAM, UNARY

# The figures that get a ratio to the echo floor's beside them.
COMPARED = (
    "p50_us",
    "p90_us",
    "p99_us",
    "calls_per_s",
    "examples_per_s",
    "server_cpu_us_per_call",
    "server_cpu_us_per_example",
)


def values(collected: Collected, key: Key, figure: str) -> list[float | None]:
    """One figure of one measurement, round by round (None where a round failed)."""
    return [r.get(figure) if r else None for r in collected.rounds.get(key, [])]


def _summary(collected: Collected, key: Key) -> dict[str, object]:
    rounds = collected.rounds[key]
    names = next((list(r) for r in rounds if r), [])
    summary: dict[str, object] = {name: spread(values(collected, key, name)) for name in names}
    section, workload, server, level = key
    echo = (section, workload, ECHO, level)
    if section != WORKERS and server != ECHO and echo in collected.rounds:
        summary["over_echo"] = {
            name: ratio_spread(values(collected, key, name), values(collected, echo, name))
            for name in COMPARED
            if name in names
        }
    if section == WORKERS and level > 1:
        one = (WORKERS, workload, workers_name(1), 1)
        summary["over_1_worker"] = ratio_spread(
            values(collected, key, "calls_per_s"), values(collected, one, "calls_per_s")
        )
    if key in collected.errors:
        summary["error"] = collected.errors[key]
    return summary


def sections(collected: Collected, start_errors: dict[int, str]) -> dict[str, dict]:
    """The JSON's measurement sections:

    - sequential[workload][server] and in_flight[workload][server][calls in flight],
    - streams[server][number of streams], workers[worker count],

    each a {figure: spread} with `over_echo` ({figure: ratio spread}) and `error` where it
    applies; a worker count whose server did not start holds only its `error`.
    """
    out: dict[str, dict] = {SEQUENTIAL: {}, IN_FLIGHT: {}, STREAMS: {}, WORKERS: {}}
    for key in collected.rounds:
        section, workload, server, level = key
        summary = _summary(collected, key)
        if section == SEQUENTIAL:
            out[section].setdefault(workload, {})[server] = summary
        elif section == IN_FLIGHT:
            out[section].setdefault(workload, {}).setdefault(server, {})[str(level)] = summary
        elif section == STREAMS:
            out[section].setdefault(server, {})[str(level)] = summary
        else:
            out[section][str(level)] = summary
    for count, error in start_errors.items():
        out[WORKERS][str(count)] = {"error": error}
    return out


def _target(
    collected: Collected,
    name: str,
    goal: tuple[str, float],
    top: tuple[Key, str],
    bottom: tuple[Key, str],
    missing: str | None = None,
) -> dict[str, object]:
    relation, limit = goal
    ratio = ratio_spread(values(collected, *top), values(collected, *bottom))
    met = None
    if ratio is not None:
        median = float(ratio["median"])  # type: ignore[arg-type]
        met = median <= limit if relation == "<=" else median >= limit
    entry: dict[str, object] = {"name": name, "goal": f"{relation} {limit}", "ratio": ratio}
    entry["met"] = met
    if ratio is None:
        entry["missing"] = missing or collected.errors.get(top[0]) or "not measured"
    return entry


def targets(collected: Collected, plan: Plan, start_errors: dict[int, str]) -> list[dict]:
    """The performance issue's targets, each a ratio of two figures of the same run."""
    return [_target(collected, *spec) for spec in _target_specs(plan, start_errors)]


def _target_specs(plan: Plan, start_errors: dict[int, str]) -> list[tuple]:
    """(name, goal, numerator, denominator[, why missing]) of each target."""
    level = plan.target_in_flight
    cpu, rate = "server_cpu_us_per_call", "calls_per_s"

    def seq(server: str, w: str = PREDICT) -> Key:
        return (SEQUENTIAL, w, server, 1)

    def flight(server: str, w: str) -> Key:
        return (IN_FLIGHT, w, server, level)

    specs: list[tuple] = []
    for w in UNARY:
        specs.append((f"server CPU per {w} call, sequential, / echo", ("<=", 1.3),
                      (seq(FOLDSERVE, w), cpu), (seq(ECHO, w), cpu)))  # fmt: skip
        specs.append((f"server CPU per {w} call, {level} in flight, / echo", ("<=", 1.3),
                      (flight(FOLDSERVE, w), cpu), (flight(ECHO, w), cpu)))  # fmt: skip
    specs.append(("Predict sequential p50 / echo", ("<=", 1.2),
                  (seq(FOLDSERVE), "p50_us"), (seq(ECHO), "p50_us")))  # fmt: skip
    for w in UNARY:
        specs.append((f"{w} calls/s at {level} in flight / echo", (">=", 0.9),
                      (flight(FOLDSERVE, w), rate), (flight(ECHO, w), rate)))  # fmt: skip
    two, one = (WORKERS, PREDICT, workers_name(2), 2), (WORKERS, PREDICT, workers_name(1), 1)
    why = start_errors.get(2) or (None if 2 in plan.workers else "not asked (--workers 1,2)")
    specs.append((f"--workers 2 / 1, Predict calls/s at {level} in flight", (">=", 1.6),
                  (two, rate), (one, rate), why))  # fmt: skip
    stream = (STREAMS, STREAM, FOLDSERVE, 1)
    specs.append(("one PredictStream examples/s / sequential Predict calls/s", (">=", 3.0),
                  (stream, "examples_per_s"), (seq(FOLDSERVE), rate)))  # fmt: skip
    return specs
