"""Soak: many V2 calls at a fixed number in flight against `foldserve serve` with its defaults.

    .venv/bin/python bench/soak.py --model models/default/model.onnx [--calls 200000]
        [--in-flight 64] [--max-seconds 600] [--reload-every 5] [--sigterm-after 30]

Starts the server (its own process, default settings), keeps exactly `--in-flight` ModelInfer
calls in flight from one asyncio client process, over gRPC (one channel) or, with `--protocol
http`, V2 REST (a keep-alive connection per call in flight, Triton's binary tensors), and prints
the calls made, the errors by status, p50/p99 latency and the server's resident memory at start,
after warm-up and at the end.
`--reload-every S` serves a model repository and pushes a new version every S seconds (the old
one is removed), so the run also counts calls failed during swaps. `--sigterm-after S` sends
SIGTERM S seconds in and counts what happened to the calls: answered, refused UNAVAILABLE (the
drain: never admitted), or failed. Exits 1 on any error (refusals by the drain excepted).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import numpy as np

from foldserve._proto.inference import grpc_predict_v2_pb2 as v2
from foldserve._proto.inference import grpc_predict_v2_pb2_grpc as v2_grpc
from foldserve.bench.http_client import CODES, HttpConnection
from foldserve.bench.spread_load import rest_twin
from foldserve.bench.suite.cpu import tree_rss_bytes

WARMUP_CALLS = 20_000
READY = re.compile(r"grpc_port=(\d+) http_port=(\d+)")


@contextmanager
def started_server(
    command: list[str], log: Path
) -> Iterator[tuple[tuple[int, int], subprocess.Popen]]:
    """Start the server; yield its (gRPC, HTTP) ports and process; kill it if still running at
    the end."""
    with log.open("w") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=sink)
    try:
        deadline = time.monotonic() + 60
        while not (match := READY.search(log.read_text())):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the server did not start:\n{log.read_text()}")
            time.sleep(0.05)
        yield (int(match.group(1)), int(match.group(2))), process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)


def rss_mb(pid: int) -> float:
    """Resident memory of the server: its process and its worker processes (--workers)."""
    return tree_rss_bytes(pid) / 2**20 or float("nan")


def _request(shape: tuple[int, ...]) -> v2.ModelInferRequest:
    batch = np.random.default_rng(0).uniform(0, 16, (1, *shape)).astype(np.float32)
    tensor = v2.ModelInferRequest.InferInputTensor(name="input", datatype="FP32", shape=batch.shape)
    return v2.ModelInferRequest(
        model_name="foldserve", inputs=[tensor], raw_input_contents=[batch.tobytes()]
    )


class Load:
    """`in_flight` workers sharing one channel, until `calls` are made or time is up."""

    def __init__(self, target: str, calls: int, in_flight: int, deadline: float) -> None:
        self.target, self.calls, self.in_flight, self.deadline = target, calls, in_flight, deadline
        self.started = 0
        self.statuses: Counter = Counter()
        self.latencies: list[float] = []
        self.milestones: dict[str, float] = {}
        # With --sigterm-after: when the signal went, and the answers to calls started after it.
        self.signalled: float | None = None
        self.after_signal: Counter = Counter()

    async def run(self, request: v2.ModelInferRequest, on_warm) -> None:
        async with grpc.aio.insecure_channel(self.target) as channel:
            stub = v2_grpc.GRPCInferenceServiceStub(channel)

            async def call() -> str:
                try:
                    await stub.ModelInfer(request, timeout=30)
                    return "OK"
                except grpc.aio.AioRpcError as exc:
                    return exc.code().name

            await asyncio.gather(*(self._worker(call, on_warm) for _ in range(self.in_flight)))

    async def run_http(self, request: v2.ModelInferRequest, on_warm) -> None:
        host, port = self.target.rsplit(":", 1)
        path, body, headers = rest_twin(request)

        async def worker() -> None:
            connection = HttpConnection(host, int(port))

            async def call() -> str:
                try:
                    status, _ = await connection.request("POST", path, body, headers)
                except OSError:
                    return "CONNECTION"
                return CODES.get(status, f"HTTP {status}")

            await self._worker(call, on_warm)
            await connection.close()

        await asyncio.gather(*(worker() for _ in range(self.in_flight)))

    async def _worker(self, call, on_warm) -> None:
        while self.started < self.calls and time.monotonic() < self.deadline:
            self.started += 1
            if self.started == WARMUP_CALLS:
                on_warm()
            start = time.perf_counter()
            late = self.signalled is not None
            code = await call()
            self.latencies.append(time.perf_counter() - start)
            self.statuses[code] += 1
            if late:
                self.after_signal[code] += 1
            if code == "UNAVAILABLE" and "draining" not in self.milestones:
                self.milestones["draining"] = time.monotonic()


async def _push_versions(repo: Path, model: Path, every: float, calls: asyncio.Future) -> int:
    pushed, version = 0, 2
    while True:
        await asyncio.wait([calls], timeout=every)
        if calls.done():
            return pushed
        staging = repo / f".{version}"
        staging.mkdir()
        shutil.copy(model, staging / "model.onnx")
        staging.rename(repo / str(version))
        shutil.rmtree(repo / str(version - 1))
        pushed, version = pushed + 1, version + 1


def _repository(model: Path, workdir: Path) -> Path:
    repo = workdir / "repo"
    (repo / "1").mkdir(parents=True)
    shutil.copy(model, repo / "1" / "model.onnx")
    return repo


async def _soak(args: argparse.Namespace, workdir: Path) -> int:
    source = _repository(args.model, workdir) if args.reload_every else args.model
    command = [
        sys.executable, "-m", "foldserve.cli", "serve", "--model", str(source), "--host",
        "127.0.0.1", "--port", "0", "--http-port", "0", "--metrics-port", "0",
        "--poll-seconds", "1",
    ]  # fmt: skip
    with started_server(command, workdir / "server.log") as (ports, process):
        from foldserve.core.loading import load_model

        shape = load_model(args.model).require_classifier().example_shape
        rss = {"start": rss_mb(process.pid)}
        port = ports[1] if args.protocol == "http" else ports[0]
        load = Load(
            f"127.0.0.1:{port}", args.calls, args.in_flight, time.monotonic() + args.max_seconds
        )
        run = load.run_http if args.protocol == "http" else load.run
        calls = asyncio.ensure_future(
            run(_request(shape), lambda: rss.setdefault("warm", rss_mb(process.pid)))
        )
        tasks = [calls]
        if args.reload_every:  # pushes versions for as long as the calls go on
            pushing = _push_versions(source, args.model, args.reload_every, calls)
            tasks.append(asyncio.ensure_future(pushing))
        if args.sigterm_after:
            tasks.append(_sigterm(process, args.sigterm_after, load))
        started = time.monotonic()
        results = await asyncio.gather(*tasks)
        elapsed = time.monotonic() - started
        rss["end"] = rss_mb(process.pid) if process.poll() is None else float("nan")
        exit_code = process.wait(60) if args.sigterm_after else None
    return _report(args, load, rss, elapsed, results, exit_code)


async def _sigterm(process: subprocess.Popen, after: float, load: Load) -> None:
    await asyncio.sleep(after)
    load.signalled = time.monotonic()
    process.send_signal(signal.SIGTERM)


def _report(args, load: Load, rss: dict, elapsed: float, results, exit_code) -> int:
    calls = sum(load.statuses.values())
    p50, p99 = np.percentile(np.asarray(load.latencies) * 1e3, [50, 99])
    errors = {k: n for k, n in load.statuses.items() if k != "OK"}
    print(
        f"calls: {calls} in {elapsed:.1f} s ({calls / elapsed:.0f}/s) at {args.in_flight} in flight"
        f" over {args.protocol}"
    )
    print(f"answers: {dict(load.statuses.most_common())}")
    print(f"latency ms: p50 {p50:.2f} p99 {p99:.2f}")
    warm = rss.get("warm", float("nan"))
    print(f"server RSS MB (its processes): start {rss['start']:.1f}, "
          f"after {WARMUP_CALLS} calls {warm:.1f}, "
          f"end {rss['end']:.1f} (growth after warm-up {rss['end'] - warm:+.1f})")  # fmt: skip
    if args.reload_every:
        print(f"versions pushed during the run: {results[1]}")
    if args.sigterm_after:
        errors = _drain_errors(load)
        print(f"SIGTERM after {args.sigterm_after} s: server exit code {exit_code}")
        before = load.statuses - load.after_signal
        print(
            "calls started before SIGTERM (OK, or UNAVAILABLE when they arrived after it): "
            f"{dict(before)}"
        )
        print(
            "calls started after it (UNAVAILABLE: refused by the drain; CANCELLED: reached the "
            f"server as grpcio closed its transport at the end of the grace period): "
            f"{dict(load.after_signal)}"
        )
    print(f"failed calls: {sum(errors.values())} {errors or ''}")
    return 1 if errors or (exit_code not in (None, 0)) else 0


def _drain_errors(load: Load) -> dict[str, int]:
    """Failures under a drain: any answer but OK or a refusal (UNAVAILABLE: the drain refused it,
    or it was still on its way when the drain began), except CANCELLED for a call started after
    the signal. A draining server admits no new call, and admitted calls finish in milliseconds,
    long before the grace period ends, so a late call CANCELLED is one grpcio's final stop cut
    off before it reached us (the same happens with a bare grpcio server)."""
    before = load.statuses - load.after_signal
    errors = {k: n for k, n in before.items() if k not in ("OK", "UNAVAILABLE")}
    for code, count in load.after_signal.items():
        if code not in ("OK", "UNAVAILABLE", "CANCELLED"):
            errors[f"{code} (after SIGTERM)"] = count
    return errors


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--model", type=Path, required=True, help="model.onnx to serve")
    parser.add_argument("--calls", type=int, default=200_000)
    parser.add_argument("--in-flight", type=int, default=64)
    parser.add_argument("--max-seconds", type=float, default=600, help="bound on the run")
    parser.add_argument("--reload-every", type=float, default=0, help="push a version every S s")
    parser.add_argument("--sigterm-after", type=float, default=0, help="SIGTERM after S s")
    parser.add_argument("--protocol", choices=("grpc", "http"), default="grpc")
    args = parser.parse_args(argv)
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    with tempfile.TemporaryDirectory() as workdir:
        return asyncio.run(_soak(args, Path(workdir)))


if __name__ == "__main__":
    sys.exit(main())
