"""`foldserve bench`: sequential Predict latency of bare servers vs foldserve, side by side.

The baselines: a canned-reply echo server (sync and asyncio, `service.tools.echo`), which is
what a Python gRPC call costs at all, and a bare sync server that runs the same model with nothing
else (`service.tools.bare_server`), which is what a call that runs onnxruntime costs at all.
Each server runs in its own process (the client would otherwise share the GIL with it); within a
run the servers take turns in blocks of calls, and the medians over runs are reported, ratios
taken run by run.
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
BLOCK = 100


@contextmanager
def _process(command: list[str], pattern: str) -> Iterator[int]:
    """Start a server process; yield the port it reports (on stdout or stderr)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
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


def _interleaved(
    stubs: dict[str, pb_grpc.PredictorStub], request: pb.PredictRequest, calls: int
) -> dict[str, np.ndarray]:
    """`calls` timed calls to each server, in alternating blocks: a load spike from elsewhere on
    the machine then lands on every server alike, and the ratios stay comparable."""
    timings: dict[str, list[np.ndarray]] = {name: [] for name in stubs}
    for start in range(0, calls, BLOCK):
        for name, stub in stubs.items():
            timings[name].append(_latencies(stub, request, min(BLOCK, calls - start)) * 1e6)
    return {name: np.concatenate(blocks) for name, blocks in timings.items()}


def _print_summary(results: dict[str, list[tuple[float, float]]]) -> None:
    runs = len(results["echo-sync"])
    print(f"\nmedian over {runs} runs (sequential, one example per call); ratios are per run:")
    print(f"{'server':<12}{'p50 µs':>10}{'p99 µs':>10}{'p50/echo-sync':>16}{'p50/bare-model':>16}")
    for name, values in results.items():
        p50 = statistics.median(v[0] for v in values)
        p99 = statistics.median(v[1] for v in values)
        ratios = [
            statistics.median(v[0] / b[0] for v, b in zip(values, results[base], strict=True))
            for base in ("echo-sync", "bare-model")
        ]
        print(f"{name:<12}{p50:>10.1f}{p99:>10.1f}{ratios[0]:>16.2f}{ratios[1]:>16.2f}")


def run_bench(args: argparse.Namespace) -> int:
    """Run the benchmark and print per-run and median figures (microseconds)."""
    python = sys.executable
    servers = {
        "echo-sync": ([python, "-m", "service.tools.echo", "--mode", "sync"], r"port=(\d+)"),
        "echo-aio": ([python, "-m", "service.tools.echo", "--mode", "aio"], r"port=(\d+)"),
        "bare-model": (
            [python, "-m", "service.tools.bare_server", "--model", str(Path(args.model))],
            r"port=(\d+)",
        ),
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
        print(
            f"{args.runs} runs x {args.calls} sequential calls per server, interleaved in "
            f"blocks of {BLOCK} (warm-up {args.warmup}); µs"
        )
        for stub in stubs.values():
            _latencies(stub, request, args.warmup)
        for run in range(args.runs):
            timings = _interleaved(stubs, request, args.calls)
            cells = []
            for name, values in timings.items():
                p50, p99 = np.percentile(values, [50, 99])
                results[name].append((float(p50), float(p99)))
                cells.append(f"{name} p50 {p50:7.1f} p99 {p99:7.1f}")
            print(f"run {run + 1}: " + " | ".join(cells), flush=True)
    _print_summary(results)
    return 0
