"""`foldserve chaos`: each fault under load against a real `foldserve serve`, one row per fault
with its bound and PASS/FAIL."""

from __future__ import annotations

import argparse
import asyncio
import platform
import resource
import tempfile
import time
import traceback
from collections.abc import Awaitable, Callable
from datetime import date
from pathlib import Path

from foldserve.bench.chaos.harness import Row, infer_request, serve, table
from foldserve.bench.chaos.kill import kill_row
from foldserve.bench.chaos.load import Load

ROWS = ("kill", "balancer", "peers", "reloads", "repository", "shm")
FULL = {"warm": 3000, "after": 3000}
SHORT = {"warm": 500, "after": 500}


def _raise_fd_limit(wanted: int) -> int:
    """Raise this process's open-file limit towards `wanted` (its children inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return max(soft, target)


async def _kill_rows(args: argparse.Namespace, workdir: Path) -> list[Row]:
    sizes = SHORT if args.short else FULL
    request = infer_request(args.model)
    rows = []
    flags = ["--model", str(args.model), "--workers", "2", "--poll-seconds", "0"]
    with serve(flags, workdir, "kill") as serving:
        for protocol in ("grpc", "http"):  # the second kill strikes once the first is restarted
            load = Load(serving.target(protocol), request, protocol, args.in_flight)
            rows.append(await kill_row(serving, load, sizes["warm"], sizes["after"]))
    return rows


async def _balancer_rows(args: argparse.Namespace, workdir: Path) -> list[Row]:
    from foldserve.bench.chaos.balancer import balancer_rows

    sizes = SHORT if args.short else FULL
    return await balancer_rows(args, workdir, sizes["warm"], sizes["after"])


async def _peer_rows(args: argparse.Namespace, workdir: Path) -> list[Row]:
    from foldserve.bench.chaos.peer_rows import peer_rows

    return await peer_rows(args, workdir)


async def _reload_rows(args: argparse.Namespace, workdir: Path) -> list[Row]:
    from foldserve.bench.chaos.reloads import reload_rows

    return await reload_rows(args, workdir, args.short)


async def _repository_rows(args: argparse.Namespace, workdir: Path) -> list[Row]:
    from foldserve.bench.chaos.repository_rows import repository_rows

    return await repository_rows(args, workdir, args.short)


async def _shm_rows(args: argparse.Namespace, workdir: Path) -> list[Row]:
    from foldserve.bench.chaos.shm_rows import shm_rows

    return await shm_rows(args, workdir, args.short)


RUNNERS: dict[str, Callable[[argparse.Namespace, Path], Awaitable[list[Row]]]] = {
    "kill": _kill_rows,
    "balancer": _balancer_rows,
    "peers": _peer_rows,
    "reloads": _reload_rows,
    "repository": _repository_rows,
    "shm": _shm_rows,
}


async def _run(args: argparse.Namespace, workdir: Path) -> list[Row]:
    rows: list[Row] = []
    for name in args.rows:
        started = time.monotonic()
        try:
            got = await RUNNERS[name](args, workdir)
        except Exception as exc:  # the harness failed, not a bound: the other rows still run
            traceback.print_exc()
            saw = f"the row's harness raised {type(exc).__name__}: {exc}"
            got = [Row(f"{name} rows", "run to the end", False, saw=saw[:300])]
        for row in got:
            print(table([row]).splitlines()[-1], flush=True)
        print(f"  ({name}: {time.monotonic() - started:.1f} s)", flush=True)
        rows += got
    return rows


def run_chaos(args: argparse.Namespace) -> int:
    """Run the rows asked for; print the table; 0 when every row passed, 1 otherwise."""
    _raise_fd_limit(args.fd_limit)
    args.model = Path(args.model).resolve()
    started = time.monotonic()
    if args.workdir:
        Path(args.workdir).mkdir(parents=True, exist_ok=True)
        rows = asyncio.run(_run(args, Path(args.workdir)))
    else:
        with tempfile.TemporaryDirectory(prefix="foldserve-chaos-") as workdir:
            rows = asyncio.run(_run(args, Path(workdir)))
    cores = len(__import__("os").sched_getaffinity(0))
    print()
    mode = "--short " if args.short else ""
    seconds = time.monotonic() - started
    machine = f"{platform.machine()}, {cores} cores"
    print(f"foldserve chaos {mode}on {date.today()}, {machine}, {seconds:.0f} s")
    print(table(rows))
    failed = [row.fault for row in rows if not row.passed]
    print(f"{len(rows) - len(failed)} of {len(rows)} rows within their bound")
    return 1 if failed else 0


def _rows(text: str) -> list[str]:
    rows = [row for row in text.split(",") if row]
    unknown = sorted(set(rows) - set(ROWS))
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown rows {unknown}: choose from {', '.join(ROWS)}")
    return rows


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("--model", default="models/default/model.onnx", help="model.onnx to serve")
    add("--short", action="store_true", help="fewer calls and faults: under a minute")
    add(
        "--rows",
        type=_rows,
        default=list(ROWS),
        help=f"which rows, comma-separated (default all: {','.join(ROWS)})",
    )
    add("--in-flight", type=int, default=64, help="calls in flight during every fault")
    add("--haproxy", default="haproxy", help="the HAProxy executable (the balancer row)")
    add(
        "--haproxy-config",
        default="deploy/balancer/haproxy.cfg",
        help="the balancer config whose retry settings the balancer row uses",
    )
    add("--workdir", help="keep the servers' logs and repositories here (default: a temporary one)")
    add("--fd-limit", type=int, default=24_000, help="open files to allow (idle connections)")
