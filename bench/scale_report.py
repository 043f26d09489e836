"""The figures of the repository-scale benchmark, kept round by round, and their Markdown tables:
medians with their min–max over the rounds, ratios taken round by round before their median
(load from elsewhere on the machine then largely cancels out of them)."""

from __future__ import annotations

import argparse
import datetime
import math
import os
import platform
import statistics
from collections.abc import Sequence
from pathlib import Path

from foldserve.bench.spread_load import LoadResult

ONE, SPREAD = "one", "spread"
Key = tuple


class Figures:
    """Every figure of every round, by key, and the problems seen (failed calls, silent
    models)."""

    def __init__(self) -> None:
        self.rounds: dict[Key, list[float]] = {}
        self.problems: list[str] = []

    def add(self, key: Key, value: float) -> None:
        self.rounds.setdefault(key, []).append(float(value))

    def get(self, key: Key) -> list[float]:
        return self.rounds.get(key, [])

    def check(self, result: LoadResult, models: Sequence[str], what: str) -> None:
        """Record a problem when a call of `result` failed or one of `models` never answered."""
        if result.failed:
            statuses = dict(result.statuses.most_common())
            self.problems.append(
                f"{what}: {result.failed} of {result.calls} calls failed {statuses}"
            )
        silent = [name for name in models if not result.answered[name]]
        if silent:
            self.problems.append(f"{what}: no answer from {len(silent)} models, e.g. {silent[:5]}")

    def as_json(self, args: argparse.Namespace) -> dict:
        return {
            "machine": machine(),
            "settings": {k: v for k, v in vars(args).items() if k != "func"},
            "figures": [
                {"key": list(key), "rounds": values} for key, values in self.rounds.items()
            ],
            "problems": self.problems,
        }


def machine() -> dict[str, str]:
    """What the figures were measured on."""
    import grpc

    from foldserve.runtime import ort

    cpus = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = next((line.split(":", 1)[1].strip() for line in cpus.splitlines()
                  if line.startswith("model name")), platform.processor())  # fmt: skip
    return {
        "cpus": str(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else ""),
        "cpu": model,
        "python": platform.python_version(),
        "onnxruntime": ort.__version__,
        "grpcio": grpc.__version__,
        "load average (1 min) at the end": f"{os.getloadavg()[0]:.1f}",
        "date": datetime.date.today().isoformat(),
    }


def span(values: Sequence[float], digits: int = 1) -> str:
    """`median (min–max)`, or `–` with no finite value."""
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return "–"
    low, mid, high = min(finite), statistics.median(finite), max(finite)
    return f"{mid:,.{digits}f} ({low:,.{digits}f}–{high:,.{digits}f})"


def ratios(tops: Sequence[float], bottoms: Sequence[float]) -> list[float]:
    """Round-by-round ratios (rounds paired by position)."""
    return [t / b for t, b in zip(tops, bottoms, strict=False) if b]


def _table(header: Sequence[str], rows: list[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def startup_table(figures: Figures, args: argparse.Namespace) -> str:
    rows = []
    for w in args.workers:
        empty, small = (w, "empty"), (w, "small")
        rows += [
            [str(w), "empty (mode explicit)", span(figures.get((*empty, "ready_s")), 2),
             span(figures.get((*empty, "rss_mb")))],
            [str(w), f"{args.models} small models (mode none)",
             span(figures.get((*small, "ready_s")), 2), span(figures.get((*small, "rss_mb")))],
            [str(w), f"{args.models} small models, after the load below", "–",
             span(figures.get((*small, "rss_after_traffic_mb")))],
        ]  # fmt: skip
    header = ["workers", "repository", "ready, s after the process starts", "RSS, MiB"]
    return _table(header, rows)


def one_at_a_time_table(figures: Figures, args: argparse.Namespace, large: Sequence) -> str:
    others = args.models - 1
    rows = [
        ["the first small model", "", span(figures.get(("first small", "load_ms"))),
         span(figures.get(("first small", "rss_mb")), 2), "", ""],
        [f"each of the other {others} (median)", "", span(figures.get(("other small", "load_ms"))),
         span(figures.get(("other small", "rss_mb")), 3), "", ""],
        [f"all {args.models}, one after another", "", span(figures.get(("all small", "load_ms"))),
         "", "", ""],
    ]  # fmt: skip
    for name, size in large:
        key = ("large", name)
        rows.append(
            [name, f"{size / 2**20:,.0f}", span(figures.get((*key, "load_ms")), 0),
             span(figures.get((*key, "rss_mb"))), span(figures.get((*key, "peak_mb"))),
             span(figures.get((*key, "p50_ms")))]
        )  # fmt: skip
    header = ["model", "file, MiB", "RepositoryModelLoad, ms", "RSS added, MiB",
              "peak RSS added while loading, MiB", "one call at a time, p50 ms"]  # fmt: skip
    return _table(header, rows)


LOAD_COLUMNS = (
    ("calls_per_s", "calls/s", 0),
    ("p50_ms", "p50 ms", 2),
    ("p99_ms", "p99 ms", 2),
    ("server_cpu_us_per_call", "server CPU µs/call", 0),
    ("client_cpu_us_per_call", "client CPU µs/call", 0),
)


def load_table(figures: Figures, args: argparse.Namespace) -> str:
    rows = []
    for w in args.workers:
        for protocol in args.protocols:
            for in_flight in args.in_flight:
                for target, shown in ((ONE, "1"), (SPREAD, str(args.models))):
                    key = (w, protocol, in_flight, target)
                    cells = [
                        span(figures.get((*key, name)), digits) for name, _, digits in LOAD_COLUMNS
                    ]
                    rows.append([str(w), protocol, str(in_flight), shown, *cells])
    header = [
        "workers",
        "protocol",
        "in flight",
        "models",
        *(title for _, title, _ in LOAD_COLUMNS),
    ]
    return _table(header, rows)


def ratio_table(figures: Figures, args: argparse.Namespace) -> str:
    rows = []
    for w in args.workers:
        for protocol in args.protocols:
            for in_flight in args.in_flight:
                one, spread = (w, protocol, in_flight, ONE), (w, protocol, in_flight, SPREAD)
                cells = [
                    span(ratios(figures.get((*spread, name)), figures.get((*one, name))), 2)
                    for name in ("calls_per_s", "p50_ms", "server_cpu_us_per_call")
                ]
                rows.append([str(w), protocol, str(in_flight), *cells])
    header = ["workers", "protocol", "in flight", "calls/s", "p50", "server CPU per call"]
    return _table(header, rows)


def print_tables(figures: Figures, args: argparse.Namespace, large: Sequence[tuple]) -> None:
    print("; ".join(f"{name}: {value}" for name, value in machine().items()))
    print(
        f"{args.models} small models; {args.rounds} rounds of {args.seconds:g} s per load; "
        "median (min–max) over the rounds"
    )
    print(
        "\nModels loaded one at a time (mode explicit, one process, each large model alone)\n\n"
        + one_at_a_time_table(figures, args, large)
    )
    print("\nStart and memory\n\n" + startup_table(figures, args))
    print(f"\nLoad on one model and spread over {args.models}\n\n" + load_table(figures, args))
    print(
        f"\nSpread over {args.models} models / one model, round by round\n\n"
        + ratio_table(figures, args)
    )
