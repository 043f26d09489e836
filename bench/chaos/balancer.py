"""Row 1 behind the balancer: the repository's HAProxy config (deploy/balancer/haproxy.cfg) in
front of one `foldserve serve --workers 2`, its addresses moved to 127.0.0.1 and nothing else
changed (every check, retry and timeout setting stays the config's), as
tests/integration/deploy_balancer.py runs it for the balancer tests.
"""

from __future__ import annotations

import csv
import io
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from foldserve.bench.chaos.harness import Row, infer_request, serve
from foldserve.bench.chaos.kill import kill_row
from foldserve.bench.chaos.load import Load

TEMPLATE = re.compile(r"^(\s*)server-template\s+\S+\s+\S+\s+\S+:(\d+)\b.*$", re.MULTILINE)
FRONTENDS = {"grpc": 50051, "http": 8000}
BACKENDS = {"grpc": "foldserve", "http": "foldserve-http"}
STATS = 8404
UP_SECONDS = 30.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def local_config(text: str, grpc_replica: int, http_replica: int) -> tuple[str, dict[str, int]]:
    """The config with its listening ports moved to free ones on 127.0.0.1 and each backend's
    DNS-discovered servers replaced by one replica on 127.0.0.1; (text, {"grpc"|"http"|"stats":
    port})."""
    ports = {}
    for name, port in (*FRONTENDS.items(), ("stats", STATS)):
        ports[name] = _free_port()
        text = re.sub(
            rf"^(\s*)bind :{port}\b", rf"\1bind 127.0.0.1:{ports[name]}", text, flags=re.M
        )
    replicas = {FRONTENDS["grpc"]: grpc_replica, FRONTENDS["http"]: http_replica}
    text = TEMPLATE.sub(lambda m: f"{m[1]}server replica1 127.0.0.1:{replicas[int(m[2])]}", text)
    return text, ports


def _stats(port: int) -> list[dict[str, str]]:
    url = f"http://127.0.0.1:{port}/stats;csv"
    with urllib.request.urlopen(url, timeout=5) as answer:
        return list(csv.DictReader(io.StringIO(answer.read().decode().lstrip("# "))))


def _all_up(port: int) -> bool:
    try:
        rows = _stats(port)
    except OSError:
        return False
    states = [
        r["status"] for r in rows if r["pxname"] in BACKENDS.values() and r["svname"] == "replica1"
    ]
    return len(states) == 2 and all(s == "UP" for s in states)


@contextmanager
def haproxy(binary: str, config: Path, stats_port: int) -> Iterator[subprocess.Popen]:
    """HAProxy in the foreground on `config`, once both replicas are UP; stopped at the end."""
    check = subprocess.run([binary, "-c", "-f", str(config)], capture_output=True, text=True)
    if check.returncode:
        raise RuntimeError(f"haproxy -c failed:\n{check.stdout}{check.stderr}")
    log = config.with_suffix(".log").open("w")
    process = subprocess.Popen(
        [binary, "-db", "-f", str(config)], stdout=log, stderr=log, stdin=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + UP_SECONDS
        while not _all_up(stats_port):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"HAProxy's replicas never came UP: {config.with_suffix('.log')}"
                )
            time.sleep(0.1)
        yield process
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
        log.close()


async def balancer_rows(args, workdir: Path, warm: int, after: int) -> list[Row]:
    """The SIGKILL row through HAProxy, for gRPC and REST (skipped without HAProxy)."""
    binary = shutil.which(args.haproxy)
    source = Path(args.haproxy_config)
    if binary is None or not source.is_file():
        missing = args.haproxy if binary is None else source
        return [Row("SIGKILL 1 of 2 workers via HAProxy", "", True, skipped=f"no {missing}")]
    request = infer_request(args.model)
    rows = []
    flags = ["--model", str(args.model), "--workers", "2", "--poll-seconds", "0"]
    with serve(flags, workdir, "balanced") as serving:
        text, ports = local_config(source.read_text(), serving.grpc_port, serving.http_port)
        config = workdir / "haproxy.cfg"
        config.write_text(text)
        with haproxy(binary, config, ports["stats"]):
            for protocol in ("grpc", "http"):
                load = Load(f"127.0.0.1:{ports[protocol]}", request, protocol, args.in_flight)
                rows.append(await kill_row(serving, load, warm, after, via="HAProxy"))
    return rows
