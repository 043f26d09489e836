"""Calls while the server builds a candidate version: their p99 against the p99 just before.

    .venv/bin/python -m foldserve.bench.adapt_latency --model models/default/model.onnx

One `foldserve serve` (`--workers`, 1 by default; `--adapt-reservoir 500`; the model as version 1
of a repository) takes `--in-flight` clients' `Predict` calls, one example each, on a grey
background (digits +4). Each round: a quiet window of `--seconds`, then a model control load
with `candidate=adapt` under the same load; the calls that started while it ran are compared with
those of the quiet window; the candidate is discarded before the next round. It prints, per
round and as median (min–max) over the rounds: the p50 and p99 of both windows and their ratio,
and how long the build took (seen by the operator's call, and the server's own
`foldserve_adapt_build_duration_seconds`).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import grpc
import numpy as np

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

from foldserve._proto.foldserve.v1 import predictor_pb2 as pb
from foldserve._proto.foldserve.v1 import predictor_pb2_grpc as pb_grpc
from foldserve.bench.suite import servers
from foldserve.datasets import load_dataset

GREY = 4.0


class Load:
    """`clients` threads calling `Predict` back to back; each call's start and latency."""

    def __init__(self, target: str, clients: int, examples: np.ndarray) -> None:
        self._stop = threading.Event()
        self.calls: list[tuple[float, float]] = []
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._client, args=(target, examples[i::clients]), daemon=True)
            for i in range(clients)
        ]

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)

    def _client(self, target: str, examples: np.ndarray) -> None:
        options = [("grpc.use_local_subchannel_pool", 1)]
        with grpc.insecure_channel(target, options=options) as channel:
            stub = pb_grpc.PredictorStub(channel)
            requests = [pb.PredictRequest(features=e.tolist()) for e in examples]
            index = 0
            while not self._stop.is_set():
                started = time.perf_counter()
                stub.Predict(requests[index % len(requests)], timeout=30)
                taken = time.perf_counter() - started
                with self._lock:
                    self.calls.append((started, taken))
                index += 1

    def between(self, start: float, end: float) -> np.ndarray:
        with self._lock:
            return np.array([taken for begun, taken in self.calls if start <= begun < end])


def _control(http_port: int, value: str) -> None:
    body = json.dumps({"parameters": {"candidate": value}}).encode()
    url = f"http://127.0.0.1:{http_port}/v2/repository/models/digits/load"
    urllib.request.urlopen(urllib.request.Request(url, body, method="POST"), timeout=120).read()


def _build_seconds(metrics_port: int) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).read()
    for line in text.decode().splitlines():
        if line.startswith("foldserve_adapt_build_duration_seconds_sum"):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def _round(server, load: Load, seconds: float) -> dict[str, float]:
    quiet_start = time.perf_counter()
    time.sleep(seconds)
    built_before = _build_seconds(server.metrics_port)
    start = time.perf_counter()
    _control(server.http_port, "adapt")
    end = time.perf_counter()
    time.sleep(0.2)
    quiet, during = load.between(quiet_start, start), load.between(start, end)
    _control(server.http_port, "discard")
    return {
        "calls quiet": len(quiet), "calls during": len(during),
        "p50 quiet ms": 1e3 * np.percentile(quiet, 50),
        "p50 during ms": 1e3 * np.percentile(during, 50),
        "p99 quiet ms": 1e3 * np.percentile(quiet, 99),
        "p99 during ms": 1e3 * np.percentile(during, 99),
        "p99 ratio": np.percentile(during, 99) / np.percentile(quiet, 99),
        "adapt call s": end - start,
        "build s (server)": _build_seconds(server.metrics_port) - built_before,
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="models/default/model.onnx")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--in-flight", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=3.0, help="quiet window per round")
    parser.add_argument("--reservoir", type=int, default=500)
    parser.add_argument("--workers", type=int, default=1, help="server processes")
    args = parser.parse_args(argv)
    examples = load_dataset("digits").features.astype(np.float32) + GREY
    with tempfile.TemporaryDirectory(prefix="foldserve-adapt-") as tmp:
        (Path(tmp) / "digits" / "1").mkdir(parents=True)
        shutil.copy(args.model, Path(tmp) / "digits" / "1" / "model.onnx")
        metrics = _free_port()
        command = [sys.executable, "-m", "foldserve.cli", "serve", "--model-repository", tmp,
                   "--workers", str(args.workers), "--port", "0", "--http-port", "0",
                   "--metrics-port", str(metrics),
                   "--adapt-reservoir", str(args.reservoir), "--adapt-on-alarm", "off",
                   "--poll-seconds", "0"]  # fmt: skip
        with servers.started(command) as server:
            server.metrics_port = metrics  # type: ignore[attr-defined]
            with Load(server.target, args.in_flight, examples) as load:
                time.sleep(2.0)  # warm-up; fills the reservoir
                rounds = [_round(server, load, args.seconds) for _ in range(args.rounds)]
    _print(rounds, args)
    return 0


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _print(rounds: list[dict[str, float]], args: argparse.Namespace) -> None:
    print(f"foldserve adapt latency: {args.workers} worker(s), {args.rounds} rounds, "
          f"{args.in_flight} clients in flight, "
          f"reservoir {args.reservoir}, quiet window {args.seconds:.1f} s")  # fmt: skip
    for key in rounds[0]:
        values = [r[key] for r in rounds]
        each = " ".join(f"{v:.3g}" for v in values)
        print(f"  {key:18s} median {statistics.median(values):8.3g}  "
              f"(min {min(values):.3g}, max {max(values):.3g})  rounds: {each}")  # fmt: skip


if __name__ == "__main__":
    raise SystemExit(main())
