"""`foldserve bench`: sequential Predict latency of bare echo servers vs foldserve, side by side.

Each server runs in its own process (the client would otherwise share the GIL with it); the
servers are measured in turn within each run, and the median over runs is reported.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import grpc
import numpy as np

from service._proto.foldserve.v1 import predictor_pb2 as pb
from service._proto.foldserve.v1 import predictor_pb2_grpc as pb_grpc

STARTUP_SECONDS = 60.0


@contextmanager
def _process(command: list[str], pattern: str) -> Iterator[int]:
    """Start a server process; yield the port it reports (on stdout or stderr)."""
    env = {**os.environ, "ORT_DISABLE_TELEMETRY": "1", "PYTHONUNBUFFERED": "1"}
    with tempfile.TemporaryFile("w+") as log:
        process = subprocess.Popen(command, stdout=log, stderr=log, env=env)
        try:
            deadline = time.monotonic() + STARTUP_SECONDS
            while True:
                log.seek(0)
                match = re.search(pattern, log.read())
                if match:
                    break
                if process.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    raise RuntimeError(f"{command[2:]} did not start:\n{log.read()}")
                time.sleep(0.05)
            yield int(match.group(1))
        finally:
            process.terminate()
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)


def _latencies(stub: pb_grpc.PredictorStub, request: pb.PredictRequest, calls: int) -> np.ndarray:
    timings = np.empty(calls)
    clock = time.perf_counter
    for i in range(calls):
        start = clock()
        stub.Predict(request, timeout=10)
        timings[i] = clock() - start
    return timings


def run_bench(args: argparse.Namespace) -> int:
    """Run the benchmark and print per-run and median figures (microseconds)."""
    python = sys.executable
    servers = {
        "echo-sync": ([python, "-m", "service.echo", "--mode", "sync"], r"port=(\d+)"),
        "echo-aio": ([python, "-m", "service.echo", "--mode", "aio"], r"port=(\d+)"),
        "foldserve": (
            [python, "-m", "service.cli", "serve", "--model", str(Path(args.model)),
             "--host", "127.0.0.1", "--port", "0", "--metrics-port", "0"],
            r"grpc_port=(\d+)",
        ),
    }  # fmt: skip
    rng = np.random.default_rng(0)
    request = pb.PredictRequest(features=rng.uniform(0, 16, 64).astype(np.float32).tolist())
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in servers}
    with ExitStack() as stack:
        stubs = {}
        for name, (command, pattern) in servers.items():
            port = stack.enter_context(_process(command, pattern))
            channel = stack.enter_context(grpc.insecure_channel(f"127.0.0.1:{port}"))
            stubs[name] = pb_grpc.PredictorStub(channel)
        print(f"{args.runs} runs x {args.calls} sequential calls (warm-up {args.warmup}); µs")
        for run in range(args.runs):
            cells = []
            for name, stub in stubs.items():
                _latencies(stub, request, args.warmup)
                timings = _latencies(stub, request, args.calls) * 1e6
                p50, p99 = np.percentile(timings, [50, 99])
                results[name].append((float(p50), float(p99)))
                cells.append(f"{name} p50 {p50:7.1f} p99 {p99:7.1f}")
            print(f"run {run + 1}: " + " | ".join(cells), flush=True)
    median = {
        name: (statistics.median(r[0] for r in rs), statistics.median(r[1] for r in rs))
        for name, rs in results.items()
    }
    base = median["echo-sync"][0]
    print(f"\nmedian over {args.runs} runs (sequential, one example per call):")
    print(f"{'server':<12}{'p50 µs':>10}{'p99 µs':>10}{'p50 / echo-sync':>18}")
    for name, (p50, p99) in median.items():
        print(f"{name:<12}{p50:>10.1f}{p99:>10.1f}{p50 / base:>18.2f}")
    return 0
