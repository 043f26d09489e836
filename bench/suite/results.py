"""From the rounds to the figures the suite reports: each measurement's median and spread, its
ratios to the fastest echo floor's, and the targets of the performance issues, all taken round
by round.

"The fastest echo" is, for each figure of each measurement, the echo floor's runtime (sync, aio,
uvloop) with the best median of that figure: the least CPU per call, the lowest latency, the
most calls per second. foldserve is held to the cheapest Python gRPC server of the same calls.
"""

from __future__ import annotations

from foldserve.bench.suite.plan import ECHO, Plan
from foldserve.bench.suite.rounds import IN_FLIGHT, SEQUENTIAL, STREAMS, WORKERS, Collected, Key
from foldserve.bench.suite.servers import FOLDSERVE, kind_of, workers_name
from foldserve.bench.suite.stats import ratio_spread, spread
from foldserve.bench.suite.workloads import (
    GRPC_UNARY,
    INFER_RAW,
    INFER_TYPED,
    PREDICT,
    REST,
    STREAM,
)

# The figures that get a ratio to the fastest echo's beside them.
COMPARED = (
    "p50_us",
    "p90_us",
    "p99_us",
    "calls_per_s",
    "examples_per_s",
    "server_cpu_us_per_call",
    "server_cpu_us_per_example",
)
HIGHER_IS_BETTER = ("calls_per_s", "examples_per_s")
# Stands for the fastest echo at a target's measurement, resolved per figure.
FASTEST_ECHO = "fastest echo"


def values(collected: Collected, key: Key, figure: str) -> list[float | None]:
    """One figure of one measurement, round by round (None where a round failed)."""
    return [r.get(figure) if r else None for r in collected.rounds.get(key, [])]


def fastest_echo(collected: Collected, key: Key, figure: str) -> str | None:
    """The echo server with the best median `figure` at the measurement of `key` (its server
    part is ignored); None if no echo has it."""
    section, workload, _, level = key
    medians = {}
    for name in {k[2] for k in collected.rounds if k[:2] == (section, workload) and k[3] == level}:
        entry = spread(values(collected, (section, workload, name, level), figure))
        if kind_of(name) == ECHO and entry is not None:
            medians[name] = float(entry["median"])  # type: ignore[arg-type]
    if not medians:
        return None
    best = max if figure in HIGHER_IS_BETTER else min
    return best(sorted(medians), key=medians.__getitem__)


def _over_echo(collected: Collected, key: Key, names: list[str]) -> dict[str, object]:
    section, workload, _, level = key
    ratios: dict[str, object] = {}
    for figure in COMPARED:
        echo = fastest_echo(collected, key, figure) if figure in names else None
        if echo is None:
            continue
        bottom = values(collected, (section, workload, echo, level), figure)
        ratio = ratio_spread(values(collected, key, figure), bottom)
        if ratio is not None:
            ratios[figure] = {**ratio, "echo": echo}
    return ratios


def _summary(collected: Collected, key: Key) -> dict[str, object]:
    rounds = collected.rounds[key]
    names = next((list(r) for r in rounds if r), [])
    summary: dict[str, object] = {name: spread(values(collected, key, name)) for name in names}
    section, workload, server, level = key
    if section != WORKERS and kind_of(server) != ECHO:
        summary["over_echo"] = _over_echo(collected, key, names)
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

    each a {figure: spread} with `over_echo` ({figure: ratio spread and the "echo" it is to})
    and `error` where they apply; a worker count whose server did not start holds only its
    `error`.
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
    against = None
    if bottom[0][2] == FASTEST_ECHO:
        against = fastest_echo(collected, *bottom)
        section, workload, _, level = bottom[0]
        bottom = ((section, workload, against or FASTEST_ECHO, level), bottom[1])
    ratio = ratio_spread(values(collected, *top), values(collected, *bottom))
    met = None
    if ratio is not None:
        median = float(ratio["median"])  # type: ignore[arg-type]
        met = median <= limit if relation == "<=" else median >= limit
    entry: dict[str, object] = {"name": name, "goal": f"{relation} {limit}", "ratio": ratio}
    entry["met"] = met
    # The two figures the ratio is of, each over its rounds.
    entry["top"], entry["bottom"] = (
        spread(values(collected, *top)),
        spread(values(collected, *bottom)),
    )
    if against:
        entry["against"] = against
    if ratio is None:
        entry["missing"] = (
            missing or collected.errors.get(top[0]) or collected.errors.get(bottom[0])
        ) or "not measured"
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

    def flight(server: str, w: str, at: int = level) -> Key:
        return (IN_FLIGHT, w, server, at)

    echo = FASTEST_ECHO
    specs: list[tuple] = []
    for w in GRPC_UNARY:
        specs.append((f"server CPU per {w} call, sequential, / fastest echo", ("<=", 1.3),
                      (seq(FOLDSERVE, w), cpu), (seq(echo, w), cpu)))  # fmt: skip
    for at in plan.in_flight:
        top, bottom = flight(FOLDSERVE, PREDICT, at), flight(echo, PREDICT, at)
        specs.append((f"server CPU per Predict call, {at} in flight, / fastest echo", ("<=", 1.3),
                      (top, cpu), (bottom, cpu)))  # fmt: skip
    for w in (INFER_TYPED, INFER_RAW):
        specs.append((f"server CPU per {w} call, {level} in flight, / fastest echo", ("<=", 1.3),
                      (flight(FOLDSERVE, w), cpu), (flight(echo, w), cpu)))  # fmt: skip
    specs.append(("Predict sequential p50 / fastest echo", ("<=", 1.2),
                  (seq(FOLDSERVE), "p50_us"), (seq(echo), "p50_us")))  # fmt: skip
    for w in GRPC_UNARY:
        specs.append((f"{w} calls/s at {level} in flight / fastest echo", (">=", 0.9),
                      (flight(FOLDSERVE, w), rate), (flight(echo, w), rate)))  # fmt: skip
    two, one = (WORKERS, PREDICT, workers_name(2), 2), (WORKERS, PREDICT, workers_name(1), 1)
    why = start_errors.get(2) or (None if 2 in plan.workers else "not asked (--workers 1,2)")
    specs.append((f"--workers 2 / 1, Predict calls/s at {level} in flight", (">=", 1.6),
                  (two, rate), (one, rate), why))  # fmt: skip
    stream = (STREAMS, STREAM, FOLDSERVE, 1)
    specs.append(("one PredictStream examples/s / sequential Predict calls/s", (">=", 3.0),
                  (stream, "examples_per_s"), (seq(FOLDSERVE), rate)))  # fmt: skip
    return specs


def peer_targets(
    collected: Collected, plan: Plan, peer: str, missing: dict[str, str]
) -> list[dict]:
    """foldserve against a peer model server, same model, client and workloads, for each V2
    workload: calls/s at the target level ≥ 2×; server CPU per call ≤ 0.5× there and ≤ 0.6×
    sequentially; sequential p50 ≤ 0.7×. `missing` says, by workload, why a side has none."""
    level = plan.target_in_flight
    cpu = "server_cpu_us_per_call"
    specs = []
    for w in (INFER_TYPED, INFER_RAW, *REST):
        why = missing.get(w)
        seq = {s: (SEQUENTIAL, w, s, 1) for s in (FOLDSERVE, peer)}
        flight = {s: (IN_FLIGHT, w, s, level) for s in (FOLDSERVE, peer)}
        specs += [
            (f"{w}: calls/s at {level} in flight", (">=", 2.0),
             (flight[FOLDSERVE], "calls_per_s"), (flight[peer], "calls_per_s"), why),
            (f"{w}: server CPU per call at {level} in flight", ("<=", 0.5),
             (flight[FOLDSERVE], cpu), (flight[peer], cpu), why),
            (f"{w}: server CPU per call, sequential", ("<=", 0.6),
             (seq[FOLDSERVE], cpu), (seq[peer], cpu), why),
            (f"{w}: sequential p50", ("<=", 0.7),
             (seq[FOLDSERVE], "p50_us"), (seq[peer], "p50_us"), why),
        ]  # fmt: skip
    return [_target(collected, *spec) for spec in specs]
