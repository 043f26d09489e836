"""The balancer's HTTP/REST side: the repository's HAProxy config in front of two stand-in
replicas on 127.0.0.1 (deploy_http_replica.Replica: what HAProxy sees of a replica's HTTP port).

So these tests check the balancer's promises without the server: requests balanced one by one
(even on one client connection), a draining replica out before its drain delay ends, refusals
and dead replicas retried elsewhere, h2c, and the TLS lines (client certificates at the front,
HAProxy's certificate to the replicas, health checks over TLS, the bearer token passed through).
"""

from __future__ import annotations

import http.client
import os
import ssl
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.deploy_balancer import (
    HTTP_BACKEND,
    Balancer,
    balancer_config_for,
    detection_bound_seconds,
    run_haproxy,
)
from tests.integration.deploy_http_replica import BODY, INFER, Replica, infer
from tests.integration.deploy_tools import DEPLOY, require_programs, skip_or_fail, wait_for
from tests.integration.test_balancer import compose_drain_delay

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


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
