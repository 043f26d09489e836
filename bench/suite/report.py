"""The suite's Markdown report: the targets, every figure beside the echo floor's, the workers,
onnxruntime alone, and what the machine was doing. Every cell is "median (min–max)" over the
rounds; a ratio is the median of the round-by-round ratios."""

from __future__ import annotations

from collections.abc import Iterator

from foldserve.bench.suite.rounds import IN_FLIGHT, SEQUENTIAL, STREAMS, WORKERS
from foldserve.bench.suite.servers import BASELINES, LABELS
from foldserve.bench.suite.workloads import UNARY


def value(entry: object, digits: int = 0) -> str:
    """A spread as "median (min–max)", or "–" for none."""
    if not isinstance(entry, dict) or "median" not in entry:
        return "–"
    median, low, high = entry["median"], entry["min"], entry["max"]
    if len(entry["rounds"]) == 1 or low == high:
        return f"{median:,.{digits}f}"
    return f"{median:,.{digits}f} ({low:,.{digits}f}–{high:,.{digits}f})"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    aligns = ["---"] + ["---:"] * (len(header) - 1)
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(aligns) + " |"]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def _targets(targets: list[dict]) -> list[str]:
    rows = []
    for target in targets:
        met = {True: "yes", False: "**no**", None: "–"}[target["met"]]
        measured = value(target["ratio"], 2) if target["ratio"] else target.get("missing", "–")
        rows.append([target["name"], target["goal"], measured.splitlines()[0], met])
    return _table(["target", "goal", "measured", "met"], rows)


# (label, figure, digits) of each row group.
_SEQUENTIAL = (
    ("p50 µs", "p50_us", 0),
    ("p90 µs", "p90_us", 0),
    ("p99 µs", "p99_us", 0),
    ("server CPU µs/call", "server_cpu_us_per_call", 0),
    ("h2load CPU µs/call", "client_cpu_us_per_call", 1),
)
_FLIGHT = (
    ("calls/s", "calls_per_s", 0),
    ("p50 µs", "p50_us", 0),
    ("p99 µs", "p99_us", 0),
    ("server CPU µs/call", "server_cpu_us_per_call", 0),
    ("h2load CPU µs/call", "client_cpu_us_per_call", 1),
)
_STREAM = (
    ("examples/s", "examples_per_s", 0),
    ("server CPU µs/example", "server_cpu_us_per_example", 0),
)


def _row(label: str, cells: dict[str, dict], figure: str, digits: int) -> list[str]:
    row = [label] + [value((cells.get(name) or {}).get(figure), digits) for name in BASELINES]
    for name in BASELINES[1:]:
        ratio = ((cells.get(name) or {}).get("over_echo") or {}).get(figure)
        row.append(value(ratio, 2))
    return row


def _comparison_rows(sections: dict[str, dict]) -> Iterator[list[str]]:
    for workload in UNARY:
        cells = sections[SEQUENTIAL].get(workload, {})
        for label, figure, digits in _SEQUENTIAL:
            yield _row(f"{workload}, sequential: {label}", cells, figure, digits)
    flight = sections[IN_FLIGHT]
    levels = sorted({int(level) for w in flight.values() for s in w.values() for level in s})
    for level in levels:
        for workload in UNARY:
            servers = flight.get(workload, {})
            cells = {name: servers.get(name, {}).get(str(level)) or {} for name in BASELINES}
            for label, figure, digits in _FLIGHT:
                yield _row(f"{workload}, {level} in flight: {label}", cells, figure, digits)
    counts = sorted({int(c) for server in sections[STREAMS].values() for c in server})
    for count in counts:
        cells = {name: sections[STREAMS].get(name, {}).get(str(count)) or {} for name in BASELINES}
        for label, figure, digits in _STREAM:
            yield _row(f"{count} PredictStream: {label}", cells, figure, digits)


def _comparison(sections: dict[str, dict]) -> list[str]:
    header = ["measurement", *(LABELS[n] for n in BASELINES)]
    header += [f"{LABELS[n]} / echo" for n in BASELINES[1:]]
    return _table(header, list(_comparison_rows(sections)))


def _workers(workers: dict[str, dict], level: int) -> list[str]:
    rows = []
    for count in sorted(workers, key=int):
        entry = workers[count]
        if "calls_per_s" not in entry:
            rows.append([count, entry.get("error", "–").splitlines()[0], "–", "–", "–"])
            continue
        rows.append(
            [
                count,
                value(entry["calls_per_s"]),
                value(entry["server_cpu_us_per_call"]),
                value(entry["server_cpu_cores"], 2),
                value(entry.get("over_1_worker"), 2),
            ]
        )
    header = [
        "workers",
        f"Predict calls/s, {level} in flight",
        "server CPU µs/call",
        "server cores busy",
        "over 1 worker",
    ]
    return _table(header, rows)


def _onnxruntime(ort: dict) -> list[str]:
    rows = []
    for batch, entry in ort["batches"].items():
        kept = entry.get("bn_kept") or {}
        rows.append(
            [
                batch,
                value(entry["folded"]["p50_us"], 1),
                value(kept.get("p50_us"), 1),
                value(entry.get("kept_over_folded"), 2),
                value(entry["folded"]["us_per_example"], 2),
                value(kept.get("us_per_example"), 2),
            ]
        )
    header = [
        "batch",
        "folded µs/run",
        "BN kept µs/run",
        "kept / folded",
        "folded µs/example",
        "BN kept µs/example",
    ]
    nodes = ", ".join(
        f"{name}: {n['file']} in the file, {n['after_ort']} after onnxruntime's optimizations"
        for name, n in ort["bn_nodes"].items()
    )
    lines = [*_table(header, rows), "", f"BatchNormalization nodes: {nodes}."]
    if ort.get("max_abs_difference") is not None:
        difference = ort["max_abs_difference"]
        lines.append(
            f"Largest difference of the probabilities, folded vs BN kept: {difference:.2e}."
        )
    if "bn_kept" not in ort["files"]:
        lines.append(
            "No BN-kept model given (--bn-kept-model; make one with bench/bn_kept_model.py)."
        )
    return lines


def _machine(meta: dict) -> list[str]:
    before, after = (
        "/".join(f"{load:.2f}" for load in meta[key])
        for key in ("load_average_before", "load_average_after")
    )
    return [
        f"{meta['date']}, {meta['mode']} run: {meta['rounds']} rounds, "
        f"{meta['wall_seconds']:.0f} s. Machine: {meta['cpus']} CPUs, load average "
        f"(1/5/15 min) {before} before, {after} after. "
        f"{meta['load_generator']}; Python {meta['python']}, grpcio {meta['grpcio']}, "
        f"onnxruntime {meta['onnxruntime']}. Model {meta['model']}.",
        "",
        f"Command: `{meta['command']}`",
    ]


def markdown(result: dict) -> str:
    """The whole report of one run, as Markdown."""
    meta = result["meta"]
    level = meta["target_in_flight"]
    parts = [
        ["# foldserve bench", "", *_machine(meta)],
        [
            "## Targets (ratios of this run, median and min–max over the rounds)",
            "",
            *_targets(result["targets"]),
        ],
        ["## Every figure beside the echo floor's", "", *_comparison(result)],
        [
            f"## foldserve --workers (Predict, {level} in flight)",
            "",
            *_workers(result[WORKERS], level),
        ],
        [
            "## onnxruntime alone: folded vs BatchNorm kept (µs per run, p50)",
            "",
            *_onnxruntime(result["onnxruntime"]),
        ],
    ]
    return "\n\n".join("\n".join(part) for part in parts) + "\n"
