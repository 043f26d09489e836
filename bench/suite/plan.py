"""What one `foldserve bench` run measures, and how much: the full or the short preset, with
any flag given on the command line taking its place."""

from __future__ import annotations

import argparse
import importlib.util
from dataclasses import dataclass, fields
from pathlib import Path

from foldserve.bench.baselines.runtimes import AIO, RUNTIMES, UVLOOP
from foldserve.server.config import MAX_CONCURRENT_RPCS

BENCH_OUT = "bench-results"  # where the JSON, the Markdown table and the plots go
BENCH_IN_FLIGHT = (1, 8, 32, 64)  # calls kept in flight by the load generator
# The level of the throughput targets and of the --workers comparison.
BENCH_TARGET_IN_FLIGHT = 32
# Client connections that carry the calls in flight: SO_REUSEPORT balances workers per
# connection, so one connection would put every call on one worker.
BENCH_CONNECTIONS = 8
BENCH_STREAMS = 4  # "several streams": each on its own connection
ECHO, BARE = "echo", "bare"  # the baseline servers, each run on every runtime asked for
BASELINE_KINDS = (ECHO, BARE)
PEERS = ("mlserver",)  # other model servers `--peer` measures beside foldserve


def short_runtime() -> str:
    """The short run's one runtime: uvloop where it is installed (the echo floor's cheapest and
    fastest at almost every level on the 2-core development box: a full run measures all
    three), else asyncio's own loop. Looked up, not imported: the parser must stay light."""
    return UVLOOP if importlib.util.find_spec("uvloop") is not None else AIO


SHORT_RUNTIME = short_runtime()
# The full run (`foldserve bench`, a few minutes) and the short one (`--short`, seconds; `make
# test` runs it). Calls are per server, method and round; seconds per measurement.
BENCH_FULL = {
    "rounds": 3,
    "calls": 5000,
    "warmup": 500,
    "duration": 2.0,
    "stream_messages": 5000,
    "workers": (1, 2),
    "ort_seconds": 0.3,
    "runtimes": RUNTIMES,
    "baselines": BASELINE_KINDS,
}
BENCH_SHORT = {
    "rounds": 1,
    "calls": 200,
    "warmup": 50,
    "duration": 0.2,
    "stream_messages": 200,
    "workers": (1,),
    "ort_seconds": 0.02,
    "runtimes": (SHORT_RUNTIME,),
    "baselines": (ECHO,),
}
BENCH_ORT_BATCHES = (1, 32, 256)  # the onnxruntime-alone comparison, folded vs BN kept


@dataclass(frozen=True)
class Plan:
    """The settings of one run (see `foldserve bench --help` for each)."""

    model: str
    out: Path
    bn_kept_model: str | None = None
    short: bool = False
    rounds: int = 3
    calls: int = 5000
    warmup: int = 500
    duration: float = 2.0
    in_flight: tuple[int, ...] = BENCH_IN_FLIGHT
    target_in_flight: int = BENCH_TARGET_IN_FLIGHT
    connections: int = BENCH_CONNECTIONS
    streams: int = BENCH_STREAMS
    stream_messages: int = 5000
    workers: tuple[int, ...] = (1, 2)
    ort_seconds: float = 0.3
    h2load: str | None = None
    runtimes: tuple[str, ...] = RUNTIMES
    baselines: tuple[str, ...] = BASELINE_KINDS
    peer: str | None = None
    peer_cache: Path | None = None

    @property
    def concurrency_limit(self) -> int:
        """`--max-concurrent-rpcs` of every server: twice the most calls the run keeps in flight.

        At exactly its limit a grpc server refuses a few calls (RESOURCE_EXHAUSTED) that arrive
        as others finish, so a level of 64 at foldserve's default of 64 would measure admission,
        not calls.
        """
        most = max((*self.in_flight, self.target_in_flight, self.streams))
        return max(MAX_CONCURRENT_RPCS, 2 * most)

    @property
    def warmup_seconds(self) -> float:
        """Untimed load before each timed run at a level of calls in flight."""
        return min(0.25, self.duration / 4)

    def split(self, in_flight: int, multiplexed: bool = True) -> tuple[int, int]:
        """(connections, streams per connection) carrying `in_flight` calls: as many of
        `connections` as divide it evenly; not `multiplexed` (HTTP/1.1), one per call."""
        if not multiplexed:
            return in_flight, 1
        connections = max(
            c for c in range(1, min(self.connections, in_flight) + 1) if not in_flight % c
        )
        return connections, in_flight // connections


def positive_int(text: str) -> int:
    """Parse a whole number ≥ 1, for argparse."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive whole number")
    return value


def positive_float(text: str) -> float:
    """Parse a finite number > 0 (seconds), for argparse."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"{value} is not a positive number of seconds")
    return value


def int_list(text: str) -> tuple[int, ...]:
    """Parse "1,8,32" into (1, 8, 32): positive whole numbers, for argparse."""
    try:
        values = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a comma-separated list of numbers"
        ) from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected positive whole numbers, e.g. 1,2")
    return values


def choices(allowed: tuple[str, ...], none: bool = False):
    """A parser, for argparse, of a comma-separated subset of `allowed` ("none": the empty
    one, where `none`), kept in the order of `allowed`."""

    def parse(text: str) -> tuple[str, ...]:
        words = [word.strip() for word in text.split(",") if word.strip()]
        if none and words == ["none"]:
            return ()
        unknown = [word for word in words if word not in allowed]
        if unknown or not words:
            also = ", or none" if none else ""
            raise argparse.ArgumentTypeError(
                f"{text!r}: expected some of {', '.join(allowed)}{also}, comma-separated"
            )
        return tuple(name for name in allowed if name in words)

    return parse


def from_args(args: argparse.Namespace) -> Plan:
    """The plan for parsed `foldserve bench` arguments: the preset of `--short` or the full run,
    with every flag that was given (not None) in place of its preset value."""
    preset = BENCH_SHORT if args.short else BENCH_FULL
    values: dict[str, object] = {**preset, "short": bool(args.short)}
    for field in fields(Plan):
        given = getattr(args, field.name, None)
        if given is not None and field.name != "short":
            values[field.name] = given
    values["model"] = str(values["model"])
    values["out"] = Path(values["out"])  # type: ignore[arg-type]
    if values.get("peer_cache") is not None:
        values["peer_cache"] = Path(values["peer_cache"])  # type: ignore[arg-type]
    values["workers"] = tuple(sorted(set(values["workers"]) | {1}))  # type: ignore[call-overload]
    return Plan(**values)  # type: ignore[arg-type]
