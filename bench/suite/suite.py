"""`foldserve bench`, end to end: start the servers (installing the peer first, once, with
`--peer`), check every workload, run the rounds, time onnxruntime alone, then write the JSON, the
Markdown report and the plots, and print the report.

Exit codes: 0 when everything was measured; 1 when something was not (a server that did not
start, such as a `foldserve serve` without `--workers` yet; foldserve's REST when its serve
reports no `http_port=`; a peer that could not be installed; a measurement that failed: the rest
is still measured and written); 2 when nothing could be (no h2load, a bad model, a baseline
server or foldserve's gRPC not answering).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import grpc
import numpy as np

from foldserve.bench.suite import cpu, h2load, ort_alone, peer, plots, report, results
from foldserve.bench.suite.lineup import Lineup, SetupError, check
from foldserve.bench.suite.plan import BASELINE_KINDS, BENCH_ORT_BATCHES, Plan, from_args
from foldserve.bench.suite.rounds import Bench, Collected, run_rounds
from foldserve.bench.suite.servers import (
    FOLDSERVE,
    ServerSpec,
    ServerStartError,
    kind_of,
    specs,
    start_all,
)
from foldserve.bench.suite.stats import cdf
from foldserve.bench.suite.workloads import (
    STREAM,
    rest_workloads,
    stream_workload,
    unary_workloads,
)
from foldserve.core.loading import load_model
from foldserve.core.model import Model, ModelError
from foldserve.runtime import ort

JSON_FILE, MARKDOWN_FILE = "bench.json", "bench.md"


def _say(text: str) -> None:
    print(text, flush=True)


def _warn(text: str) -> None:
    print(f"foldserve bench: {text}", file=sys.stderr, flush=True)


def _specs(plan: Plan, model: Model, workdir: Path) -> tuple[list[ServerSpec], dict | None]:
    """Every server to start, and what to record of the peer (None: no `--peer`)."""
    server_specs = specs(
        plan.model, plan.workers, plan.concurrency_limit, plan.baselines, plan.runtimes
    )
    if not plan.peer:
        return server_specs, None
    try:
        spec, info = peer.prepare(plan.peer_cache, workdir / "peer", model, _say)
    except peer.PeerError as exc:
        _warn(f"measuring without {plan.peer}: {exc}")
        return server_specs, {"name": plan.peer, "error": str(exc)}
    return [*server_specs, spec], info


def _measure_servers(plan: Plan, model: Model, binary: str) -> tuple[Collected, Lineup, dict]:
    classifier = model.require_classifier()
    workloads = {**unary_workloads(classifier), **rest_workloads(classifier)}
    workloads[STREAM] = stream_workload(classifier, plan.stream_messages)
    with tempfile.TemporaryDirectory(prefix="foldserve-bench-") as scratch:
        workdir = Path(scratch)
        server_specs, peer_info = _specs(plan, model, workdir)
        with start_all(server_specs, workdir) as started:
            if peer_info and "error" not in peer_info:
                error = started.get(peer_info["name"])
                if isinstance(error, ServerStartError):
                    peer_info["error"] = str(error)
            lineup = check(started, workloads, _warn)
            generator = h2load.H2Load(binary, workdir)
            bench = Bench(
                plan,
                generator,
                lineup.servers,
                lineup.workers,
                workloads,
                lineup.replies,
                lineup.serving,
                _say,
            )
            return run_rounds(bench), lineup, peer_info or {}


def _command(plan: Plan) -> str:
    words = ["foldserve bench", "--model", plan.model, *(["--short"] if plan.short else [])]
    for name in ("rounds", "calls", "duration", "stream_messages"):
        words += [f"--{name.replace('_', '-')}", str(getattr(plan, name))]
    words += ["--in-flight", ",".join(map(str, plan.in_flight))]
    words += ["--workers", ",".join(map(str, plan.workers))]
    words += ["--baselines", ",".join(plan.baselines) or "none"]
    words += ["--runtimes", ",".join(plan.runtimes)]
    if plan.peer:
        words += ["--peer", plan.peer]
    if plan.bn_kept_model:
        words += ["--bn-kept-model", plan.bn_kept_model]
    return " ".join(words)


def _version(binary: str) -> str:
    done = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10)
    return (done.stdout.strip() or "h2load").splitlines()[0]


def _meta(plan: Plan, model: Model, binary: str, load_before, started: float) -> dict:
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "mode": "short" if plan.short else "full",
        "rounds": plan.rounds,
        "wall_seconds": time.monotonic() - started,
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "load_average_before": list(load_before),
        "load_average_after": list(cpu.load_average()),
        "load_generator": f"{_version(binary)} (one thread)",
        "connections": plan.connections,
        "server_max_concurrent_rpcs": plan.concurrency_limit,
        "target_in_flight": plan.target_in_flight,
        "python": platform.python_version(),
        "grpcio": grpc.__version__,
        "onnxruntime": ort.__version__,
        "model": plan.model,
        "model_sha256": model.sha256,
        "cpu_accounting": "/proc/<pid>/stat" if cpu.available() else None,
        "command": _command(plan),
    }


def _curves(collected: Collected) -> dict[str, dict[str, dict]]:
    """The sequential latency CDF of every workload and server, all rounds pooled."""
    curves: dict[str, dict[str, dict]] = {}
    for (workload, server), runs in collected.latencies.items():
        curves.setdefault(workload, {})[server] = cdf(np.concatenate(runs))
    return curves


def _write(result: dict, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    (out / JSON_FILE).write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n")
    (out / MARKDOWN_FILE).write_text(report.markdown(result))
    written = [out / JSON_FILE, out / MARKDOWN_FILE]
    pictures = plots.write(result, out)
    if pictures is None:
        _warn("matplotlib is not installed: no plots (pip install -e '.[dev]' has it)")
    return written + (pictures or [])


def _run(plan: Plan) -> int:
    started, load_before = time.monotonic(), cpu.load_average()
    binary = h2load.find(plan.h2load)
    try:
        model = load_model(plan.model)
    except ModelError as exc:
        raise SetupError(str(exc)) from None
    _say(
        f"foldserve bench ({'short' if plan.short else 'full'}): {plan.rounds} rounds; load "
        f"average {load_before[0]:.2f}; h2load from {binary}"
    )
    collected, lineup, peer_info = _measure_servers(plan, model, binary)
    _say("onnxruntime alone: folded vs BN kept")
    ort_result = ort_alone.compare(
        model, plan.bn_kept_model, BENCH_ORT_BATCHES, plan.ort_seconds, plan.rounds
    )
    result = {
        "meta": _meta(plan, model, binary, load_before, started),
        "servers": _server_table(lineup),
        "targets": results.targets(collected, plan, lineup.start_errors),
        **results.sections(collected, lineup.start_errors),
        "missing": lineup.missing,
        "not_served": lineup.not_served,
        "onnxruntime": ort_result,
        "cdf": _curves(collected),
    }
    if plan.peer:
        result["peer"] = {**peer_info, "targets": _peer_targets(collected, plan, lineup)}
    paths = _write(result, plan.out)
    _say("\n" + report.markdown(result))
    _say("wrote " + ", ".join(str(path) for path in paths))
    failures = len(collected.errors) + len(lineup.start_errors) + len(lineup.missing)
    failures += 1 if "error" in peer_info else 0
    if failures:
        _warn(f"{failures} measurement(s) could not be made; see the report")
    return 1 if failures else 0


def _server_table(lineup: Lineup) -> list[dict[str, object]]:
    """Every server measured, in table order: name, kind (echo, bare, foldserve, a peer) and
    runtime (a baseline's)."""
    table = []
    for name in lineup.servers:
        kind = kind_of(name)
        runtime = name.split("-", 1)[1] if kind in BASELINE_KINDS else None
        table.append({"name": name, "kind": kind, "runtime": runtime})
    return table


def _peer_targets(collected: Collected, plan: Plan, lineup: Lineup) -> list[dict]:
    missing = {}
    for entry in lineup.missing + lineup.not_served:
        if entry["server"] in (FOLDSERVE, plan.peer):
            missing.setdefault(entry["workload"], f"{entry['server']}: {entry['why']}")
    return results.peer_targets(collected, plan, plan.peer or "", missing)


def run_bench(args: argparse.Namespace) -> int:
    """Run the suite for parsed `foldserve bench` arguments; return the exit code."""
    try:
        return _run(from_args(args))
    except (SetupError, h2load.LoadError) as exc:
        _warn(f"error: {exc}")
        return 2
