"""What one `foldserve bench` run measures, and how much: the full or the short preset, with
any flag given on the command line taking its place."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, fields
from pathlib import Path

from service import defaults


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
    in_flight: tuple[int, ...] = defaults.BENCH_IN_FLIGHT
    target_in_flight: int = defaults.BENCH_TARGET_IN_FLIGHT
    connections: int = defaults.BENCH_CONNECTIONS
    streams: int = defaults.BENCH_STREAMS
    stream_messages: int = 5000
    workers: tuple[int, ...] = (1, 2)
    ort_seconds: float = 0.3
    h2load: str | None = None

    @property
    def concurrency_limit(self) -> int:
        """`--max-concurrent-rpcs` of every server: twice the most calls the run keeps in flight.

        At exactly its limit a grpc server refuses a few calls (RESOURCE_EXHAUSTED) that arrive
        as others finish, so a level of 64 at foldserve's default of 64 would measure admission,
        not calls.
        """
        most = max((*self.in_flight, self.target_in_flight, self.streams))
        return max(defaults.MAX_CONCURRENT_RPCS, 2 * most)

    @property
    def warmup_seconds(self) -> float:
        """Untimed load before each timed run at a level of calls in flight."""
        return min(0.25, self.duration / 4)

    def split(self, in_flight: int) -> tuple[int, int]:
        """(connections, streams per connection) carrying `in_flight` calls: as many of
        `connections` as divide it evenly."""
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


def from_args(args: argparse.Namespace) -> Plan:
    """The plan for parsed `foldserve bench` arguments: the preset of `--short` or the full run,
    with every flag that was given (not None) in place of its preset value."""
    preset = defaults.BENCH_SHORT if args.short else defaults.BENCH_FULL
    values: dict[str, object] = {**preset, "short": bool(args.short)}
    for field in fields(Plan):
        given = getattr(args, field.name, None)
        if given is not None and field.name != "short":
            values[field.name] = given
    values["model"] = str(values["model"])
    values["out"] = Path(values["out"])  # type: ignore[arg-type]
    values["workers"] = tuple(sorted(set(values["workers"]) | {1}))  # type: ignore[call-overload]
    return Plan(**values)  # type: ignore[arg-type]
