"""Row 1: SIGKILL one worker of `--workers 2` mid-load, directly and behind the balancer.

Directly, the calls in flight on the killed worker's connections fail (the client cannot tell
a call that was answered from one that was not, so none is retried for it); every other call,
and every call started after the kill, must be answered. The supervisor notices the death and
starts a new worker; its restart time runs from the kill until a new process listens on both
ports. Behind HAProxy with the repository's retry settings (`retry-on conn-failure
empty-response`, `redispatch`), a call cut off by the death is sent again, so the client sees
nothing.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time

from foldserve.bench.chaos import procs
from foldserve.bench.chaos.harness import Row, Serving
from foldserve.bench.chaos.load import Load, statuses

RESTART_BOUND_SECONDS = 1.0
RESTART_WAIT_SECONDS = 30.0


async def _calls(load: Load, count: int, limit: float = 30.0) -> None:
    """Wait until `load` has finished `count` more calls."""
    goal, deadline = len(load.calls) + count, time.monotonic() + limit
    while len(load.calls) < goal and time.monotonic() < deadline:
        await asyncio.sleep(0.01)


async def _restarted(serving: Serving, old: set[int]) -> tuple[float, int]:
    """(monotonic time, pid) when a worker not in `old` listens on both ports."""
    deadline = time.monotonic() + RESTART_WAIT_SECONDS
    while time.monotonic() < deadline:
        grpc_side = set(procs.workers(serving.pid, serving.grpc_port)) - old
        if grpc_side & set(procs.workers(serving.pid, serving.http_port)):
            return time.monotonic(), grpc_side.pop()
        await asyncio.sleep(0.005)
    return float("nan"), 0


async def kill_row(
    serving: Serving, load: Load, warm_calls: int, after_calls: int, via: str = ""
) -> Row:
    """Kill the worker holding the most of `load`'s connections (through `via`, a balancer:
    any), wait for its replacement, and load on for `after_calls`."""
    protocol = load.protocol
    port = serving.grpc_port if protocol == "grpc" else serving.http_port
    running = asyncio.get_running_loop().create_task(load.run())
    await _calls(load, warm_calls)
    rss_before = serving.rss_mb()
    pids = procs.workers(serving.pid, port)
    owner = procs.worker_of(pids, port)
    held = {pid: [c for c, p in load.ports.items() if owner.get(p) == pid] for pid in pids}
    # Through a balancer, the worker holding most of its connections.
    victim = max(pids, key=lambda pid: len(held[pid]) or list(owner.values()).count(pid))
    # In one step of the event loop: no call starts or ends between the count and the kill.
    in_flight = sum(load.busy[c] for c in held[victim])
    killed = time.monotonic()
    os.kill(victim, signal.SIGKILL)
    ready, _ = await _restarted(serving, set(pids))
    await _calls(load, after_calls)
    load.stop()
    await running
    rss_after = serving.rss_mb()
    counted = statuses(load.calls)
    failed = [c for c in load.calls if c.status != "OK"]
    elsewhere = [c for c in failed if c.connection not in held[victim]]
    late = [c for c in failed if c.start > killed]
    restart = ready - killed
    window = max((c.end for c in failed), default=killed) - killed
    if via:
        passed = not failed and restart < RESTART_BOUND_SECONDS
        share = list(owner.values()).count(victim)
        saw = f"{len(failed)} failed; the killed worker held {share} of {len(owner)} connections"
        bound = f"0 failed; restart < {RESTART_BOUND_SECONDS:.0f} s"
    else:
        # A call sent just after the kill, on a connection whose end died, is lost as well:
        # the client had not yet seen the connection close (`late`).
        passed = len(failed) <= in_flight and not elsewhere and restart < RESTART_BOUND_SECONDS
        saw = (
            f"{len(failed)} failed of {in_flight} in flight on the killed worker's "
            f"{len(held[victim])} connections ({len(late)} sent after the kill, before the close "
            f"reached the client; {len(elsewhere)} on the other worker's)"
        )
        bound = f"failed ≤ in flight on it, 0 elsewhere; restart < {RESTART_BOUND_SECONDS:.0f} s"
    recovery = f"new worker ready {restart:.2f} s after the kill; last failure +{window:.2f} s"
    name = f"SIGKILL 1 of 2 workers, {protocol}" + (f" via {via}" if via else "")
    return Row(name, bound, passed, counted, saw, recovery, (rss_before, rss_after))
