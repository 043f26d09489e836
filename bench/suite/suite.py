"""`foldserve bench`, end to end: start the servers, check every workload, run the rounds, time
onnxruntime alone, then write the JSON, the Markdown report and the plots, and print the report.

Exit codes: 0 when everything was measured; 1 when something was not (a server that did not
start, such as a `foldserve serve` without `--workers` yet, or a measurement that failed: the
rest is still measured and written); 2 when nothing could be (no h2load, a bad model, a
baseline server or foldserve itself not answering).
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

from foldserve.bench.suite import cpu, h2load, ort_alone, plots, report, results
from foldserve.bench.suite.plan import BENCH_ORT_BATCHES, Plan, from_args
from foldserve.bench.suite.rounds import Bench, Collected, run_rounds
from foldserve.bench.suite.servers import (
    BASELINES,
    FOLDSERVE,
    Server,
    ServerStartError,
    specs,
    start_all,
    workers_name,
)
from foldserve.bench.suite.stats import cdf
from foldserve.bench.suite.workloads import (
    PREDICT,
    STREAM,
    WorkloadError,
    reply_bytes,
    stream_workload,
    unary_workloads,
)
from foldserve.core.loading import load_model
from foldserve.core.model import Model, ModelError
from foldserve.runtime import ort

JSON_FILE, MARKDOWN_FILE = "bench.json", "bench.md"


class SetupError(RuntimeError):
    """Nothing can be measured; the message says why."""


def _say(text: str) -> None:
    print(text, flush=True)


def _warn(text: str) -> None:
    print(f"foldserve bench: {text}", file=sys.stderr, flush=True)


def _servers(
    started: dict[str, Server | ServerStartError], workers: tuple[int, ...]
) -> tuple[dict[str, Server], dict[int, Server], dict[int, str]]:
    """The baselines (each one needed), foldserve by worker count, and why a count did not
    start."""
    baselines = {}
    for name in BASELINES:
        server = started[name]
        if isinstance(server, ServerStartError):
            raise SetupError(str(server))
        baselines[name] = server
    by_count, errors = {1: baselines[FOLDSERVE]}, {}
    for count in workers:
        server = started[workers_name(count)]
        if isinstance(server, ServerStartError):
            errors[count] = server.reason
            _warn(f"measuring the rest without it: {server}")
        else:
            by_count[count] = server
    return baselines, by_count, errors


def _replies(
    baselines: dict[str, Server], workers: dict[int, Server], workloads: dict, errors: dict
) -> dict[tuple[str, str], int]:
    replies = {}
    for name, server in baselines.items():
        for workload in workloads.values():
            try:
                replies[(name, workload.name)] = reply_bytes(server.target, workload)
            except WorkloadError as exc:
                raise SetupError(f"{name} does not answer {exc}") from None
    for count, server in list(workers.items()):
        try:
            replies[(server.spec.name, PREDICT)] = reply_bytes(server.target, workloads[PREDICT])
        except WorkloadError as exc:
            errors[count] = f"{server.spec.name} does not answer {exc}"
            del workers[count]
    return replies


def _measure_servers(plan: Plan, model: Model, binary: str) -> tuple[Collected, dict[int, str]]:
    with tempfile.TemporaryDirectory(prefix="foldserve-bench-") as scratch:
        workdir = Path(scratch)
        with start_all(specs(plan.model, plan.workers, plan.concurrency_limit), workdir) as started:
            baselines, workers, errors = _servers(started, plan.workers)
            workloads = unary_workloads(model.require_classifier())
            workloads[STREAM] = stream_workload(model.require_classifier(), plan.stream_messages)
            replies = _replies(baselines, workers, workloads, errors)
            bench = Bench(
                plan, h2load.H2Load(binary, workdir), baselines, workers, workloads, replies, _say
            )
            return run_rounds(bench), errors


def _command(plan: Plan) -> str:
    words = ["foldserve bench", "--model", plan.model, *(["--short"] if plan.short else [])]
    for name in ("rounds", "calls", "duration", "stream_messages"):
        words += [f"--{name.replace('_', '-')}", str(getattr(plan, name))]
    words += ["--in-flight", ",".join(map(str, plan.in_flight))]
    words += ["--workers", ",".join(map(str, plan.workers))]
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
    collected, start_errors = _measure_servers(plan, model, binary)
    _say("onnxruntime alone: folded vs BN kept")
    ort_result = ort_alone.compare(
        model, plan.bn_kept_model, BENCH_ORT_BATCHES, plan.ort_seconds, plan.rounds
    )
    result = {
        "meta": _meta(plan, model, binary, load_before, started),
        "targets": results.targets(collected, plan, start_errors),
        **results.sections(collected, start_errors),
        "onnxruntime": ort_result,
        "cdf": _curves(collected),
    }
    paths = _write(result, plan.out)
    _say("\n" + report.markdown(result))
    _say("wrote " + ", ".join(str(path) for path in paths))
    failures = len(collected.errors) + len(start_errors)
    if failures:
        _warn(f"{failures} measurement(s) could not be made; see the report")
    return 1 if failures else 0


def run_bench(args: argparse.Namespace) -> int:
    """Run the suite for parsed `foldserve bench` arguments; return the exit code."""
    try:
        return _run(from_args(args))
    except (SetupError, h2load.LoadError) as exc:
        _warn(f"error: {exc}")
        return 2
