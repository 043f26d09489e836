"""Row 4: hostile and broken peers (`peers`) on the gRPC port and the HTTP port of `--workers 2`,
each while the load runs: memory bounded (`--max-connections` caps what a worker holds), the
load's p99 within 2x of the quiet window just before, no worker lost."""

from __future__ import annotations

import asyncio
import json
import sys
import time

from foldserve.bench.chaos import procs
from foldserve.bench.chaos.harness import Row, Serving, infer_request, serve
from foldserve.bench.chaos.load import Call, Load, p99_ms, statuses

P99_RATIO = 2.0
RSS_BOUND_MB = 64.0
FAULTS = {  # name, (full count, short count): connections used
    "idle": ("{n:,} idle connections", 10_000, 2_000),
    "slow": ("{n} slow senders (a byte at a time)", 100, 20),
    "reset": ("rapid reset, {n} connections", 2, 1),
    "flood": ("PING+SETTINGS flood, {n} connections", 2, 1),
}
HTTP_NAMES = {
    "reset": "request then reset, {n} connections",
    "flood": "pipelined requests never read, {n} connections",
}


async def _peer(fault: str, protocol: str, port: int, seconds: float, count: int) -> dict:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "foldserve.bench.chaos.peers", fault, protocol, str(port),
        str(seconds), str(count), stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, _ = await process.communicate()
    try:
        return json.loads(out.decode().strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {"peer": f"failed, exit {process.returncode}"}


def _during(calls: list[Call], start: float, end: float) -> list[Call]:
    return [c for c in calls if start <= c.start < end]


async def _sample_rss(serving: Serving, until: asyncio.Future) -> float:
    peak = 0.0
    while not until.done():
        peak = max(peak, serving.rss_mb())
        await asyncio.sleep(0.1)
    return peak


async def _fault_row(serving, load, protocol, fault, count, seconds) -> Row:
    port = serving.grpc_port if protocol == "grpc" else serving.http_port
    pids = set(procs.workers(serving.pid, port))
    quiet_start = time.monotonic()
    await asyncio.sleep(seconds)
    quiet = p99_ms(_during(load.calls, quiet_start, time.monotonic()))
    before = serving.rss_mb()
    start = time.monotonic()
    peer = asyncio.ensure_future(_peer(fault, protocol, port, seconds, count))
    peak = await _sample_rss(serving, peer)
    end = time.monotonic()
    await asyncio.sleep(0.2)
    during = _during(load.calls, start, end)
    p99, after = p99_ms(during), serving.rss_mb()
    lost = pids - set(procs.workers(serving.pid, port))
    counted = statuses(during)
    errors = sum(n for k, n in counted.items() if k != "OK")
    passed = p99 <= P99_RATIO * quiet and peak - before < RSS_BOUND_MB and not lost and not errors
    name = HTTP_NAMES.get(fault, FAULTS[fault][0]) if protocol == "http" else FAULTS[fault][0]
    peer_said = ", ".join(f"{k.replace('_', ' ')} {v:,}" for k, v in peer.result().items())
    saw = f"{peer_said}; load p99 {p99:.1f} ms (quiet {quiet:.1f}); workers lost {len(lost)}"
    recovery = f"RSS peak {peak - before:+.1f} MB"
    bound = f"p99 ≤ {P99_RATIO:.0f}× quiet, RSS peak < +{RSS_BOUND_MB:.0f} MB, 0 errors"
    return Row(f"{name.format(n=count)}, {protocol}", bound, passed, counted, saw, recovery,
               (before, after))  # fmt: skip


async def peer_rows(args, workdir) -> list[Row]:
    request = infer_request(args.model)
    seconds = 1.0 if args.short else 4.0
    rows = []
    flags = ["--model", str(args.model), "--workers", "2", "--poll-seconds", "0"]
    with serve(flags, workdir, "peers") as serving:
        for protocol in ("grpc", "http"):
            load = Load(serving.target(protocol), request, protocol, args.in_flight)
            running = asyncio.ensure_future(load.run())
            await asyncio.sleep(seconds)
            for fault, (_, full, short) in FAULTS.items():
                count = short if args.short else full
                rows.append(await _fault_row(serving, load, protocol, fault, count, seconds))
            load.stop()
            await running
    return rows
