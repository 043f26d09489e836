"""The suite's Markdown report: the targets, foldserve against the peer, every figure of every
server (the baselines on each runtime, foldserve, the peer) with foldserve's ratio to the fastest
echo, the workers, onnxruntime alone, and what the machine was doing. Every cell is "median
(min–max)" over the rounds; a ratio is the median of the round-by-round ratios."""

from __future__ import annotations

from foldserve.bench.suite.report_tables import (
    client_line,
    figure_table,
    stream_rows,
    table,
    unary_rows,
    value,
)
from foldserve.bench.suite.rounds import WORKERS
from foldserve.bench.suite.servers import FOLDSERVE


def _targets(targets: list[dict]) -> list[str]:
    lines = []
    for target in targets:
        met = {True: "yes", False: "**no**", None: "–"}[target["met"]]
        measured = value(target["ratio"], 2) if target["ratio"] else target.get("missing", "–")
        lines.append([target["name"], target["goal"], measured.splitlines()[0], met])
        if target.get("against"):
            lines[-1][0] += f" ({target['against']})"
    return table(["target", "goal", "measured", "met"], lines)


def _figures(result: dict) -> list[str]:
    """One table per figure, every server a column."""
    parts = [
        ("Server CPU µs per call", "server_cpu_us_per_call", 0, list(unary_rows(result))),
        ("Calls per second", "calls_per_s", 0, list(unary_rows(result, sequential=False))),
        ("Latency p50 µs", "p50_us", 0, list(unary_rows(result))),
        ("Latency p99 µs", "p99_us", 0, list(unary_rows(result))),
        ("PredictStream: examples per second", "examples_per_s", 0, list(stream_rows(result))),
        ("PredictStream: server CPU µs per example", "server_cpu_us_per_example", 0,
         list(stream_rows(result))),
    ]  # fmt: skip
    lines: list[str] = []
    for title, figure, digits, measured in parts:
        if measured:
            lines += [f"### {title}", "", *figure_table(result, figure, digits, measured), ""]
    return [*lines, client_line(result)]


def _peer_targets(targets: list[dict], peer: str) -> list[str]:
    lines = []
    for target in targets:
        digits = 0 if target["top"] is None or target["top"]["median"] > 10 else 2
        measured = value(target["ratio"], 2) if target["ratio"] else target.get("missing", "–")
        met = {True: "yes", False: "**no**", None: "–"}[target["met"]]
        lines.append(
            [target["name"], value(target["top"], digits), value(target["bottom"], digits)]
        )
        lines[-1] += [measured.splitlines()[0], target["goal"], met]
    return table(["figure", FOLDSERVE, peer, f"foldserve / {peer}", "goal", "met"], lines)


def _peer(result: dict) -> list[str]:
    peer = result["peer"]
    name = peer["name"]
    if "error" in peer:
        return [f"{name} could not be measured:", "", "```", peer["error"], "```"]
    lines = [
        f"{name} {peer.get('version', '')} in its own venv ({peer.get('venv')}: "
        f"{', '.join(peer.get('requirements', []))}), in-process (parallel_workers 0), the same "
        f"model through a custom onnxruntime runtime, the same client and request bodies. "
        f"Ratios are foldserve / {name}, round by round.",
        "",
    ]
    lines += _peer_targets(peer["targets"], name)
    for entry in result.get("not_served", []):
        lines.append(f"\n{entry['server']} does not serve {entry['workload']}: {entry['why']}")
    return lines


def _missing(result: dict) -> list[str]:
    return [f"- {e['server']}, {e['workload']}: {e['why']}" for e in result.get("missing", [])]


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
    return table(header, rows)


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
    lines = [*table(header, rows), "", f"BatchNormalization nodes: {nodes}."]
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
    ]
    if result.get("peer"):
        parts.append([f"## foldserve against {result['peer']['name']}", "", *_peer(result)])
    if result.get("missing"):
        parts.append(["## Not measured", "", *_missing(result)])
    parts += [
        ["## Every figure, every server", "", *_figures(result)],
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
