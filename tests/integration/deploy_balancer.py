"""The repository's HAProxy config for tests: its sections as the TLS switch leaves them, the
health-check bytes it sends, a copy pointed at replicas on 127.0.0.1, a running HAProxy and what
its stats say about each replica.

`balancer_config_for` is the one place `deploy/balancer/haproxy.cfg` changes for a test, and only
in addresses: the listening ports become free ones on 127.0.0.1, and each DNS-discovered
`server-template` line (one per backend: gRPC, HTTP) becomes one static `server` line per test
replica of that backend. Every check, retry and timeout setting (on `defaults` and
`default-server`) stays the repository's.
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
BACKEND = "foldserve"  # gRPC
HTTP_BACKEND = "foldserve-http"  # KServe V2 REST
GRPC_PORT, HTTP_PORT, STATS_PORT = 50051, 8000, 8404
SERVER_TEMPLATE = re.compile(r"^(\s*)server-template\s+(\S+)\s+\S+\s+\S+:(\d+)\b.*$", re.MULTILINE)


# --- the config as HAProxy reads it -----------------------------------------------------------


def sections(text: str, *, tls: bool = False) -> dict[str, list[str]]:
    """The config's sections ("defaults", "frontend http", "backend foldserve", ...), each a list
    of its stripped lines without comments, with `.if defined(BALANCER_TLS)` blocks resolved as
    HAProxy would with BALANCER_TLS defined (`tls`) or not."""
    found: dict[str, list[str]] = {}
    current: list[str] = []
    keep = [True]
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line == ".if defined(BALANCER_TLS)":
            keep.append(tls)
        elif line == ".else":
            keep[-1] = not keep[-1]
        elif line == ".endif":
            keep.pop()
        elif line.startswith("."):
            raise AssertionError(f"a conditional the tests do not know: {line}")
        elif not all(keep):
            continue
        elif not raw[0].isspace():
            current = found.setdefault(line, [])
        else:
            current.append(line)
    assert keep == [True], "unbalanced .if/.endif in haproxy.cfg"
    return found


def seconds(text: str) -> float:
    """An HAProxy (or compose) duration: 250ms, 1s, 2.5 (seconds)."""
    match = re.fullmatch(r"([\d.]+)(ms|s)?", text)
    assert match, text
    return float(match[1]) / (1000 if match[2] == "ms" else 1)


def check_timings() -> dict[str, str]:
    """inter, fastinter, downinter, fall, rise: declared once, in `defaults`, for every backend."""
    (line,) = [x for x in sections(HAPROXY_CONFIG.read_text())["defaults"] if "default-server" in x]
    words = line.split()
    assert "check" in words, line
    keys = {"inter", "fastinter", "downinter", "fall", "rise"}
    return {w: words[i + 1] for i, w in enumerate(words[:-1]) if w in keys}


def detection_bound_seconds() -> float:
    """From a replica's turn to NOT_SERVING (or 503), the longest HAProxy may take to take it
    out: its next check may come `inter` later, then `fall - 1` more `fastinter` apart, each
    taking up to `timeout check`."""
    defaults = sections(HAPROXY_CONFIG.read_text())["defaults"]
    (check_timeout,) = [line.split()[2] for line in defaults if line.startswith("timeout check ")]
    timings = check_timings()
    fall = int(timings["fall"])
    worst = seconds(timings["inter"]) + (fall - 1) * seconds(timings["fastinter"])
    return worst + fall * seconds(check_timeout)


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
    servers: tuple[str, ...]  # HAProxy's names of the gRPC replicas, in the order given
    http_port: int = 0
    http_servers: tuple[str, ...] = ()  # the same for the HTTP backend's replicas


def _bind(text: str, port: int, times: int) -> tuple[str, int]:
    """Replace `bind :port` (`times` occurrences) with a free port on 127.0.0.1."""
    free = free_port()
    text, binds = re.subn(rf"^(\s*)bind :{port}\b", rf"\1bind 127.0.0.1:{free}", text, flags=re.M)
    assert binds == times, f"haproxy.cfg must bind :{port} {times} time(s), not {binds}"
    return text, free


def _servers(text: str, port: int, replicas: Sequence[str]) -> tuple[str, tuple[str, ...]]:
    """Replace the server-template line for `server:port` with a `server` line per replica."""
    matches = [m for m in SERVER_TEMPLATE.finditer(text) if int(m[3]) == port]
    assert len(matches) == 1, f"haproxy.cfg must discover server:{port} with one server-template"
    (match,) = matches
    indent, prefix = match[1], match[2]
    names = tuple(f"{prefix}{i}" for i in range(1, len(replicas) + 1))
    lines = "\n".join(f"{indent}server {n} {r}" for n, r in zip(names, replicas, strict=True))
    return text[: match.start()] + lines + text[match.end() :], names


def balancer_config_for(
    replicas: Sequence[str],
    out_dir: Path,
    certs: Path | None = None,
    http_replicas: Sequence[str] = (),
) -> BalancerConfig:
    """Write the repository's haproxy.cfg, its gRPC replicas `replicas` and its HTTP replicas
    `http_replicas` (host:port; either may be empty: that backend then has no server), into
    `out_dir`; with `certs`, the TLS files it names under /certs/ are read from there instead."""
    text = HAPROXY_CONFIG.read_text()
    # The two frontends bind once plaintext, once in the opt-in TLS block.
    text, grpc_port = _bind(text, GRPC_PORT, 2)
    text, http_port = _bind(text, HTTP_PORT, 2)
    text, stats_port = _bind(text, STATS_PORT, 1)
    if certs is not None:
        text = text.replace("/certs/", f"{certs}/")
    text, names = _servers(text, GRPC_PORT, replicas)
    text, http_names = _servers(text, HTTP_PORT, http_replicas)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "haproxy.cfg"
    path.write_text(text)
    return BalancerConfig(path, grpc_port, stats_port, names, http_port, http_names)


# --- a running HAProxy ------------------------------------------------------------------------


@dataclass
class Balancer:
    config: BalancerConfig
    process: subprocess.Popen
    log: Path

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.config.grpc_port}"

    @property
    def http_target(self) -> str:
        return f"127.0.0.1:{self.config.http_port}"

    def stats(self, backend: str = BACKEND) -> dict[str, dict[str, str]]:
        """The stats page's CSV rows of a backend's servers (the gRPC one by default), by name."""
        url = f"http://127.0.0.1:{self.config.stats_port}/stats;csv"
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode().lstrip("# ")
        rows = csv.DictReader(io.StringIO(text))
        return {
            row["svname"]: row
            for row in rows
            if row["pxname"] == backend and row["svname"] not in ("FRONTEND", "BACKEND")
        }

    def state(self, server: str, backend: str = BACKEND) -> str:
        """UP, DOWN, `UP 1/2` (going down), `DOWN 1/2` (going up), MAINT, ..."""
        return self.stats(backend)[server]["status"]

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
        # Up once the page answers (a backend may have no server: its rows are then empty).
        wait_for(
            lambda: balancer.stats() is not None,
            timeout=20, what="HAProxy's stats page", detail=balancer.logs,
        )  # fmt: skip
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
