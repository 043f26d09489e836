"""The balancer's HTTP/REST side: the repository's HAProxy config in front of two stand-in
replicas on 127.0.0.1.

The stand-ins answer what HAProxy sees of a foldserve replica's HTTP port, as the Open Inference
Protocol and foldserve's status mapping say: `GET /v2/health/ready` 200 when ready, 503 while
draining; `POST /v2/models/{name}/infer` 200, or 503 (UNAVAILABLE) for a call the replica does not
run; and, dying, an empty answer or a refused connection. So these tests check the balancer's
promises without the server: requests balanced one by one (even on one client connection), a
draining replica out before its drain delay ends, refusals and dead replicas retried elsewhere,
h2c, and the TLS lines (client certificates at the front, HAProxy's certificate to the replicas,
health checks over TLS, the bearer token passed through).
"""

from __future__ import annotations

import http.client
import json
import os
import ssl
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.integration.deploy_balancer import (
    HTTP_BACKEND,
    Balancer,
    balancer_config_for,
    detection_bound_seconds,
    run_haproxy,
)
from tests.integration.deploy_tools import DEPLOY, require_programs, skip_or_fail, wait_for
from tests.integration.test_balancer import compose_drain_delay

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

MODEL = "foldserve"
INFER = f"/v2/models/{MODEL}/infer"
BODY = json.dumps(
    {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [0.5] * 4}]}
).encode()


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # HAProxy's health checks hang up once they have the status line: expected


@dataclass
class Replica:
    """A stand-in for one replica's HTTP/REST port; flip its fields to change what it answers."""

    name: str
    context: ssl.SSLContext | None = None
    ready: bool = True  # GET /v2/health/ready: 200, or 503 (draining)
    refuse: bool = False  # POST .../infer: 503 UNAVAILABLE, a call it does not run
    dead: bool = False  # closes every connection without a word, and listens no more
    counts: Counter[str] = field(default_factory=Counter)  # "infer 200", "ready 503", ...
    tokens: list[str] = field(default_factory=list)  # the authorization headers it was sent

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self.server = _QuietServer(("127.0.0.1", 0), self._handler())
        if self.context is not None:
            self.server.socket = self.context.wrap_socket(self.server.socket, server_side=True)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server.server_address[1]}"

    def count(self, what: str) -> int:
        with self._lock:
            return self.counts[what]

    def kill(self) -> None:
        self.dead = True
        self.server.shutdown()
        self.server.server_close()

    def _answer(self, method: str, path: str, headers: dict[str, str]) -> int | None:
        if self.dead:
            return None
        with self._lock:
            if method == "GET" and path == "/v2/health/ready":
                code = 200 if self.ready else 503
            elif method == "POST" and path == INFER:
                code = 503 if self.refuse else 200
                self.tokens.append(headers.get("authorization", ""))
            else:
                code = 404
            self.counts[f"{'ready' if method == 'GET' else 'infer'} {code}"] += 1
        return code

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        replica = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as HAProxy's connections to replicas

            def _serve(self, method: str) -> None:
                self.rfile.read(int(self.headers.get("content-length") or 0))
                headers = {k.lower(): v for k, v in self.headers.items()}
                code = replica._answer(method, self.path, headers)
                if code is None:  # a replica that died mid-call: the connection just closes
                    self.close_connection = True
                    return
                body = json.dumps({"model_name": MODEL, "replica": replica.name}).encode()
                if code != 200:
                    body = json.dumps({"error": f"{replica.name}: unavailable"}).encode()
                self.send_response(code)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                self._serve("GET")

            def do_POST(self) -> None:
                self._serve("POST")

            def log_message(self, *args: object) -> None:
                pass

        return Handler


def infer(connection: http.client.HTTPConnection, token: str = "") -> tuple[int, str]:
    """One POST .../infer on `connection` (kept open): the status and the replica that answered."""
    headers = {"content-type": "application/json"}
    if token:
        headers["authorization"] = f"Bearer {token}"
    connection.request("POST", INFER, body=BODY, headers=headers)
    response = connection.getresponse()
    answer = json.loads(response.read() or b"{}")
    return response.status, answer.get("replica", "")


@dataclass
class Stack:
    balancer: Balancer
    replicas: list[Replica]

    def state(self, index: int) -> str:
        return self.balancer.state(self.balancer.config.http_servers[index], HTTP_BACKEND)

    def wait_all_up(self) -> None:
        wait_for(
            lambda: all(self.state(i) == "UP" for i in range(len(self.replicas))),
            timeout=30, what="both HTTP replicas UP in HAProxy", detail=self.balancer.logs,
        )  # fmt: skip

    def connection(self) -> http.client.HTTPConnection:
        host, port = self.balancer.http_target.split(":")
        return http.client.HTTPConnection(host, int(port), timeout=10)


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    haproxy = require_programs("haproxy")["haproxy"]
    replicas = [Replica("first"), Replica("second")]
    try:
        config = balancer_config_for(
            [], tmp_path / "haproxy", http_replicas=[r.address for r in replicas]
        )
        with run_haproxy(haproxy, config, tmp_path) as balancer:
            stack = Stack(balancer, replicas)
            stack.wait_all_up()
            yield stack
    finally:
        for replica in replicas:
            if not replica.dead:
                replica.kill()


def test_requests_on_one_connection_are_balanced_one_by_one(stack: Stack):
    connection = stack.connection()
    answered = Counter(infer(connection) for _ in range(60))
    connection.close()
    assert answered == {(200, "first"): 30, (200, "second"): 30}, answered


def test_a_draining_replica_leaves_before_its_drain_delay_ends(stack: Stack):
    """As a foldserve replica on SIGTERM: readiness 503 at once, calls still served for the drain
    delay, then refused. HAProxy must have taken it out before the refusals start."""
    draining, _ = stack.replicas
    connection = stack.connection()
    draining.ready = False
    started = time.monotonic()
    codes: Counter[int] = Counter()
    while stack.state(0) != "DOWN":
        assert time.monotonic() - started < 10, f"still {stack.state(0)}: {stack.balancer.logs()}"
        codes[infer(connection)[0]] += 1  # served by both while HAProxy has not noticed
    out_after = time.monotonic() - started
    draining.refuse = True  # the drain delay is over: it would refuse now
    served_before = draining.count("infer 200")
    answered = Counter(infer(connection) for _ in range(30))
    connection.close()
    print(f"[balancer http] readiness 503 -> DOWN after {out_after:.2f} s; calls meanwhile {codes}")
    assert out_after <= detection_bound_seconds() + 0.5 < float(compose_drain_delay())
    assert set(codes) == {200}
    assert answered == {(200, "second"): 30}
    assert draining.count("infer 200") == served_before and draining.count("infer 503") == 0


def test_a_refusal_with_503_is_sent_again_to_another_replica(stack: Stack):
    """A replica whose health still says ready but which refuses (its model not loaded there):
    each refused request is replayed on the other replica (`retry-on ... 503`, redispatch)."""
    refusing, _ = stack.replicas
    refusing.refuse = True
    connection = stack.connection()
    answered = Counter(infer(connection) for _ in range(40))
    connection.close()
    assert answered == {(200, "second"): 40}, answered
    assert refusing.count("infer 503") >= 10, refusing.counts
    assert stack.state(0) == "UP", "its readiness is fine: only the calls were retried"


def test_a_replica_that_died_is_retried_elsewhere_until_it_is_out(stack: Stack):
    """Killed: the connections HAProxy holds to it close without an answer (empty-response) and
    new ones are refused (conn-failure); both are retried on the other replica."""
    dying, _ = stack.replicas
    connection = stack.connection()
    assert {infer(connection)[1] for _ in range(4)} == {"first", "second"}
    dying.kill()
    killed = time.monotonic()
    answered: Counter[tuple[int, str]] = Counter()
    while time.monotonic() - killed < 3:  # beyond HAProxy's detection: then it is DOWN
        answered[infer(connection)] += 1
    connection.close()
    assert set(answered) == {(200, "second")}, answered
    assert stack.state(0).startswith("DOWN"), stack.state(0)


def test_http2_with_prior_knowledge_h2c(stack: Stack):
    curl = require_programs("curl")["curl"]
    version = subprocess.run([curl, "-V"], capture_output=True, text=True, check=True).stdout
    if "HTTP2" not in version:
        skip_or_fail("this curl has no HTTP/2 (nghttp2)")
    done = subprocess.run(
        [
            curl, "--silent", "--show-error", "--http2-prior-knowledge", "--output", "/dev/null",
            "--write-out", "%{http_version} %{http_code}", "--data-binary", BODY.decode(),
            "--header", "content-type: application/json",
            f"http://{stack.balancer.http_target}{INFER}",
        ],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout == "2 200", done.stdout
    assert sum(r.count("infer 200") for r in stack.replicas) == 1


# --- the TLS lines (BALANCER_TLS, as deploy/compose/tls.yml sets it) --------------------------


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("http-tls") / "certs"
    made = subprocess.run(
        ["bash", str(DEPLOY / "tls" / "make-certs.sh"), str(folder)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    return folder


def replica_tls(certs: Path) -> ssl.SSLContext:
    """What a replica with --tls-cert, --tls-key and --tls-client-ca serves: mutual TLS."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(certs / "ca.crt"))
    context.load_cert_chain(certs / "server.crt", certs / "server.key")
    context.verify_mode = ssl.CERT_REQUIRED
    return context


def client_tls(certs: Path, *, certificate: bool = True) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(certs / "ca.crt"))
    if certificate:
        context.load_cert_chain(certs / "client.crt", certs / "client.key")
    return context


def test_tls_and_a_token_through_the_http_side(tmp_path: Path, certs: Path):
    haproxy = require_programs("haproxy")["haproxy"]
    replicas = [Replica("first", replica_tls(certs)), Replica("second", replica_tls(certs))]
    token = (certs / "token").read_text().strip()
    try:
        addresses = [r.address for r in replicas]
        config = balancer_config_for([], tmp_path / "haproxy", certs, http_replicas=addresses)
        env = {**os.environ, "BALANCER_TLS": "1"}
        with run_haproxy(haproxy, config, tmp_path, env) as balancer:
            stack = Stack(balancer, replicas)
            stack.wait_all_up()  # the checks went over TLS, with HAProxy's client certificate
            host, port = balancer.http_target.split(":")
            connection = http.client.HTTPSConnection(
                host, int(port), timeout=10, context=client_tls(certs)
            )
            answered = Counter(infer(connection, token) for _ in range(20))
            connection.close()
            assert answered == {(200, "first"): 10, (200, "second"): 10}, answered
            assert {t for r in replicas for t in r.tokens} == {f"Bearer {token}"}
            anonymous = http.client.HTTPSConnection(
                host, int(port), timeout=10, context=client_tls(certs, certificate=False)
            )
            with pytest.raises((OSError, http.client.HTTPException)):
                infer(anonymous, token)  # no client certificate: the balancer refuses
            anonymous.close()
            assert sum(r.count("infer 200") for r in replicas) == 20
    finally:
        for replica in replicas:
            replica.kill()
