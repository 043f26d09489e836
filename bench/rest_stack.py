"""Which HTTP stack serves V2 REST: the same echo on each candidate, loaded by h2load.

    .venv/bin/pip install starlette aiohttp   # the candidates foldserve does not install
    .venv/bin/python bench/rest_stack.py --rounds 3

Each candidate is its own one-process server (pinned to one CPU where `taskset` exists): it reads
a small V2 JSON infer request and answers a canned ~1 KB V2 JSON infer reply, so what a call costs
is what the stack costs (HTTP/1.1 parsing, the ASGI or handler plumbing, the event loop):

- `raw`: uvicorn (httptools, uvloop) serving a bare ASGI callable;
- `starlette`: uvicorn (httptools, uvloop) serving a Starlette app with one route;
- `aiohttp`: aiohttp.web on uvloop.

In each of `--rounds` rounds every candidate takes its turn (the order rotates) at 1 and at 32
calls in flight (`h2load --h1`, one connection per call in flight). It prints, per candidate and
load, the median and min–max over the rounds of calls/s and server CPU µs per call.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

STACKS = ("raw", "starlette", "aiohttp")
PATH = "/v2/models/foldserve/infer"
REQUEST = {
    "id": "r",
    "inputs": [
        {"name": "input", "shape": [1, 8], "datatype": "FP32", "data": [0.5] * 8},
    ],
}
REPLY = json.dumps(
    {
        "model_name": "foldserve",
        "model_version": "1",
        "id": "r",
        "outputs": [
            {"name": name, "datatype": "FP32", "shape": [1, 10], "data": [0.0123456789] * 10}
            for name in ("logits", "probabilities")
        ]
        * 3,
    }
).encode()
_DONE = re.compile(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded")


def _raw_app():
    headers = [(b"content-type", b"application/json")]

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        more = True
        while more:
            message = await receive()
            more = message.get("more_body", False)
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": REPLY})

    return app


def _starlette_app():
    from starlette.applications import Starlette
    from starlette.responses import Response
    from starlette.routing import Route

    async def infer(request):
        await request.body()
        return Response(REPLY, media_type="application/json")

    return Starlette(routes=[Route(PATH, infer, methods=["POST"])])


def _serve(stack: str, port: int) -> None:
    if stack == "aiohttp":
        import uvloop
        from aiohttp import web

        async def infer(request):
            await request.read()
            return web.Response(body=REPLY, content_type="application/json")

        app = web.Application()
        app.router.add_post(PATH, infer)
        uvloop.install()
        web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)
        return
    import uvicorn

    app = _raw_app() if stack == "raw" else _starlette_app()
    uvicorn.run(
        app, host="127.0.0.1", port=port, loop="uvloop", http="httptools",
        log_level="warning", access_log=False, lifespan="off",
    )  # fmt: skip


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _cpu_seconds(pid: int) -> float:
    """CPU time of every thread of `pid`, in ns resolution (schedstat's first field), where
    /proc/PID/stat counts 10 ms ticks."""
    tasks = Path(f"/proc/{pid}/task").iterdir()
    return sum(int((t / "schedstat").read_text().split()[0]) for t in tasks) / 1e9


def _start(stack: str, cpu: str | None) -> tuple[subprocess.Popen, int]:
    port = _free_port()
    command = [sys.executable, __file__, "--serve", stack, "--port", str(port)]
    if cpu is not None:
        command = ["taskset", "-c", cpu, *command]
    process = subprocess.Popen(command)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return process, port
        except OSError:
            time.sleep(0.05)
    process.kill()
    raise RuntimeError(f"{stack}: did not start")


def _load(port: int, body: Path, calls: int, in_flight: int, cpu: str | None) -> int:
    command = [
        "h2load", "--h1", "-t", "1", "-c", str(in_flight), "-m", "1", "-n", str(calls),
        "-d", str(body), "-H", "content-type: application/json",
        f"http://127.0.0.1:{port}{PATH}",
    ]  # fmt: skip
    if cpu is not None:
        command = ["taskset", "-c", cpu, *command]
    text = subprocess.run(command, capture_output=True, text=True, timeout=120).stdout
    done = _DONE.search(text)
    if not done or int(done.group(4)) != calls:
        raise RuntimeError(f"h2load: not every call succeeded:\n{text[-800:]}")
    return calls


def _measure(stack: str, port: int, pid: int, body: Path, args, in_flight: int) -> tuple:
    calls = args.calls
    _load(port, body, min(calls, 500), in_flight, args.client_cpu)  # warm-up
    cpu_before, started = _cpu_seconds(pid), time.perf_counter()
    _load(port, body, calls, in_flight, args.client_cpu)
    elapsed, cpu_used = time.perf_counter() - started, _cpu_seconds(pid) - cpu_before
    return calls / elapsed, cpu_used / calls * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve", choices=STACKS, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--stacks", default=",".join(STACKS))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--calls", type=int, default=9000, help="calls per run")
    args = parser.parse_args()
    if args.serve:
        _serve(args.serve, args.port)
        return
    pinned = shutil.which("taskset") is not None and (os.cpu_count() or 1) >= 2
    server_cpu, args.client_cpu = ("1", "0") if pinned else (None, None)
    stacks = args.stacks.split(",")
    results: dict[tuple[str, int], list[tuple[float, float]]] = {}
    with tempfile.TemporaryDirectory() as scratch:
        body = Path(scratch) / "request.json"
        body.write_text(json.dumps(REQUEST))
        for round_ in range(args.rounds):
            order = stacks[round_ % len(stacks) :] + stacks[: round_ % len(stacks)]
            for stack in order:
                process, port = _start(stack, server_cpu)
                try:
                    for in_flight in (1, 32):
                        figures = _measure(stack, port, process.pid, body, args, in_flight)
                        results.setdefault((stack, in_flight), []).append(figures)
                finally:
                    process.kill()
                    process.wait()
    request = len(json.dumps(REQUEST))
    print(f"reply {len(REPLY)} bytes, request {request} bytes, {args.rounds} rounds")
    print(f"{'stack':<10} {'in flight':>9} {'calls/s median (min-max)':>28} {'CPU µs/call':>24}")
    for (stack, in_flight), runs in results.items():
        rates, cpus = [r for r, _ in runs], [c for _, c in runs]
        rate = f"{statistics.median(rates):,.0f} ({min(rates):,.0f}-{max(rates):,.0f})"
        cpu = f"{statistics.median(cpus):.0f} ({min(cpus):.0f}-{max(cpus):.0f})"
        print(f"{stack:<10} {in_flight:>9} {rate:>28} {cpu:>24}")


if __name__ == "__main__":
    main()
