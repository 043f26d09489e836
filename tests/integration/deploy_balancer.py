"""The repository's HAProxy config for tests: the health-check bytes it sends, a copy pointed at
replicas on 127.0.0.1, a running HAProxy and what its stats say about each replica.

`balancer_config_for` is the one place `deploy/balancer/haproxy.cfg` changes for a test, and only
in addresses: the listening ports become free ones on 127.0.0.1, and the DNS-discovered
`server-template` line becomes one static `server` line per test replica. Every check, retry and
timeout setting (on `defaults` and `default-server`) stays the repository's.
"""

from __future__ import annotations

import csv
import io
import re
import signal
import subprocess
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.integration.deploy_tools import DEPLOY, free_port, tail, wait_for

HAPROXY_CONFIG = DEPLOY / "balancer" / "haproxy.cfg"
BACKEND = "foldserve"
SERVER_TEMPLATE = re.compile(r"^(\s*)server-template\s+(\S+)\s+\S+\s+\S+:(\d+)\b.*$", re.MULTILINE)


# --- the health check, from first principles --------------------------------------------------


def _literal(name_index: int, value: str) -> bytes:
    """HPACK literal header field without indexing, indexed name, no Huffman (RFC 7541 6.2.2)."""
    prefix = bytes([name_index]) if name_index < 15 else bytes([0x0F, name_index - 15])
    return prefix + bytes([len(value)]) + value.encode()


def _literal_new_name(name: str, value: str) -> bytes:
    return bytes([0, len(name)]) + name.encode() + bytes([len(value)]) + value.encode()


def _frame(kind: int, flags: int, stream: int, payload: bytes) -> bytes:
    return (
        len(payload).to_bytes(3, "big") + bytes([kind, flags]) + stream.to_bytes(4, "big") + payload
    )


def health_check_request() -> bytes:
    """The bytes of a plaintext gRPC call of grpc.health.v1.Health/Check for service "".

    Preface, empty SETTINGS, HEADERS (END_HEADERS) and DATA (END_STREAM) on stream 1; static
    table indices: 3 `:method POST`, 6 `:scheme http`, 4 `:path`, 1 `:authority`, 31
    `content-type`.
    """
    headers = (
        bytes([0x83, 0x86])
        + _literal(4, "/grpc.health.v1.Health/Check")
        + _literal(1, "foldserve")
        + _literal(31, "application/grpc")
        + _literal_new_name("te", "trailers")
    )
    message = b"\x00" + (0).to_bytes(4, "big")  # uncompressed, length 0: HealthCheckRequest{}
    return (
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
        + _frame(0x4, 0, 0, b"")
        + _frame(0x1, 0x4, 1, headers)
        + _frame(0x0, 0x1, 1, message)
    )


def health_reply_data_frame(status: int) -> bytes:
    """The DATA frame (stream 1) of a HealthCheckResponse{status}: 1 SERVING, 2 NOT_SERVING."""
    return _frame(0x0, 0, 1, b"\x00" + (2).to_bytes(4, "big") + bytes([0x08, status]))


# --- a copy of the config for replicas on 127.0.0.1 -------------------------------------------


@dataclass(frozen=True)
class BalancerConfig:
    path: Path
    grpc_port: int
    stats_port: int
    servers: tuple[str, ...]  # HAProxy's names of the replicas, in the order given


def balancer_config_for(
    replicas: Sequence[str], out_dir: Path, certs: Path | None = None
) -> BalancerConfig:
    """Write the repository's haproxy.cfg, its replicas `replicas` (host:port), into `out_dir`;
    with `certs`, the TLS files it names under /certs/ are read from there instead."""
    text = HAPROXY_CONFIG.read_text()
    grpc_port, stats_port = free_port(), free_port()
    # Once plaintext, once in the opt-in TLS block.
    text, binds = re.subn(
        r"^(\s*)bind :50051\b", rf"\1bind 127.0.0.1:{grpc_port}", text, flags=re.M
    )
    assert binds == 2, "haproxy.cfg must bind :50051 twice (plaintext, and with TLS)"
    text, binds = re.subn(
        r"^(\s*)bind :8404\b", rf"\1bind 127.0.0.1:{stats_port}", text, flags=re.M
    )
    assert binds == 1, "haproxy.cfg must bind :8404 once"
    if certs is not None:
        text = text.replace("/certs/", f"{certs}/")
    match = SERVER_TEMPLATE.search(text)
    assert match, "haproxy.cfg must discover its replicas with one server-template line"
    indent, prefix = match[1], match[2]
    names = tuple(f"{prefix}{i}" for i in range(1, len(replicas) + 1))
    lines = "\n".join(f"{indent}server {n} {r}" for n, r in zip(names, replicas, strict=True))
    text = text[: match.start()] + lines + text[match.end() :]
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "haproxy.cfg"
    path.write_text(text)
    return BalancerConfig(path, grpc_port, stats_port, names)


# --- a running HAProxy ------------------------------------------------------------------------


@dataclass
class Balancer:
    config: BalancerConfig
    process: subprocess.Popen
    log: Path

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.config.grpc_port}"

    def stats(self) -> dict[str, dict[str, str]]:
        """The stats page's CSV rows of our backend's servers, by server name."""
        url = f"http://127.0.0.1:{self.config.stats_port}/stats;csv"
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode().lstrip("# ")
        rows = csv.DictReader(io.StringIO(text))
        return {
            row["svname"]: row
            for row in rows
            if row["pxname"] == BACKEND and row["svname"] not in ("FRONTEND", "BACKEND")
        }

    def state(self, server: str) -> str:
        """UP, DOWN, `UP 1/2` (going down), `DOWN 1/2` (going up), MAINT, ..."""
        return self.stats()[server]["status"]

    def logs(self) -> str:
        return tail(self.log, 6000)


@contextmanager
def run_haproxy(
    binary: str, config: BalancerConfig, workdir: Path, env: dict[str, str] | None = None
) -> Iterator[Balancer]:
    """Check the config, start HAProxy in the foreground; stop it on exit."""
    check = subprocess.run(
        [binary, "-c", "-f", str(config.path)], capture_output=True, text=True, env=env
    )
    assert check.returncode == 0, f"haproxy -c failed:\n{check.stdout}{check.stderr}"
    log = workdir / "haproxy.log"
    with log.open("w") as sink:
        process = subprocess.Popen(
            [binary, "-db", "-f", str(config.path)],
            stdout=sink, stderr=sink, stdin=subprocess.DEVNULL, env=env,
        )  # fmt: skip
    balancer = Balancer(config, process, log)
    try:
        wait_for(balancer.stats, timeout=20, what="HAProxy's stats page", detail=balancer.logs)
        yield balancer
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)


# --- an image without a registry --------------------------------------------------------------


def build_haproxy_image(engine, haproxy: str, base: str, tag: str) -> None:
    """An HAProxy image without a registry: the host's (Debian bookworm's) binary and the shared
    libraries it links, in /opt/haproxy of our bookworm base, run through a `haproxy` wrapper
    that points the loader there (so the base's own libraries stay as they are)."""
    import shutil

    context = engine.root / "haproxy-image"
    (context / "lib").mkdir(parents=True)
    shutil.copy2(haproxy, context / "haproxy")
    linked = subprocess.run(["ldd", haproxy], capture_output=True, text=True, check=True).stdout
    for path in re.findall(r"=> (/\S+)", linked):
        shutil.copy2(path, context / "lib" / Path(path).name)
    (context / "haproxy.sh").write_text(
        '#!/bin/sh\nLD_LIBRARY_PATH=/opt/haproxy/lib exec /opt/haproxy/haproxy "$@"\n'
    )
    (context / "Dockerfile").write_text(
        "ARG BASE_IMAGE\n"
        "FROM ${BASE_IMAGE}\n"
        "COPY haproxy /opt/haproxy/haproxy\n"
        "COPY lib/ /opt/haproxy/lib/\n"
        "COPY haproxy.sh /usr/local/bin/haproxy\n"
        "RUN chmod 0755 /usr/local/bin/haproxy\n"
        "USER 65534:65534\n"
    )
    engine.docker("build", "--build-arg", f"BASE_IMAGE={base}", "-t", tag, str(context))
