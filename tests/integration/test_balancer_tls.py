"""The opt-in TLS stack without containers: certificates from deploy/tls/make-certs.sh, two
`foldserve serve` replicas with mutual TLS and a token, the repository's HAProxy config with its
TLS lines on (BALANCER_TLS, as deploy/compose/tls.yml sets it), and `foldserve predict` and
`health` with the flags the compose file and the README show."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.deploy_balancer import Balancer, balancer_config_for, run_haproxy
from tests.integration.deploy_tools import DEPLOY, REPO, require_programs, wait_for
from tests.integration.test_balancer import served_ok
from tests.service.model_files import write_tiny_model
from tests.service.subprocess_server import env, foldserve_command, server_process

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

CALLS = 40


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("stack-tls") / "certs"
    made = subprocess.run(
        ["bash", str(DEPLOY / "tls" / "make-certs.sh"), str(folder)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    return folder


def client_flags(certs: Path, *, token: bool = True) -> list[str]:
    flags = ["--tls-ca", str(certs / "ca.crt"), "--tls-cert", str(certs / "client.crt")]
    flags += ["--tls-key", str(certs / "client.key")]
    return flags + (["--auth-token-file", str(certs / "token")] if token else [])


def foldserve(*args: str, stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run(
        foldserve_command(*args), input=stdin, capture_output=True, text=True, cwd=REPO,
        env=env(), timeout=120,
    )  # fmt: skip


@pytest.fixture
def stack(tmp_path: Path, certs: Path) -> Iterator[tuple[Balancer, list]]:
    haproxy = require_programs("haproxy")["haproxy"]
    model = write_tiny_model(tmp_path / "model.onnx")
    args = [
        "--tls-cert", str(certs / "server.crt"), "--tls-key", str(certs / "server.key"),
        "--tls-client-ca", str(certs / "ca.crt"), "--auth-token-file", str(certs / "token"),
    ]  # fmt: skip
    with (
        server_process(model, tmp_path, args) as first,
        server_process(model, tmp_path, args) as second,
    ):
        config = balancer_config_for([first.target, second.target], tmp_path / "haproxy", certs)
        with run_haproxy(
            haproxy, config, tmp_path, {**os.environ, "BALANCER_TLS": "1"}
        ) as balancer:
            wait_for(
                lambda: all(balancer.state(n) == "UP" for n in config.servers),
                timeout=30, what="both TLS replicas UP in HAProxy", detail=balancer.logs,
            )  # fmt: skip
            yield balancer, [first, second]


def test_mutual_tls_and_a_token_through_the_balancer(stack, certs: Path) -> None:
    balancer, replicas = stack
    examples = json.dumps([[0.5] * 64] * CALLS)
    done = foldserve(
        "predict", "--target", balancer.target, "--data", "-", *client_flags(certs), stdin=examples
    )
    assert done.returncode == 0, done.stderr
    assert len(done.stdout.splitlines()) == CALLS
    per_replica = [served_ok(replica) for replica in replicas]
    assert sum(per_replica) == CALLS and min(per_replica) > 0, per_replica


def test_the_balancer_refuses_clients_without_a_certificate_or_token(stack, certs: Path) -> None:
    balancer, _ = stack
    example = json.dumps([[0.5] * 64])
    no_cert = foldserve(
        "predict", "--target", balancer.target, "--data", "-", "--tls-ca", str(certs / "ca.crt"),
        "--auth-token-file", str(certs / "token"), "--timeout", "3", stdin=example,
    )  # fmt: skip
    assert no_cert.returncode == 1 and "UNAVAILABLE" in no_cert.stderr, no_cert.stderr
    no_token = foldserve(
        "predict", "--target", balancer.target, "--data", "-", *client_flags(certs, token=False),
        stdin=example,
    )  # fmt: skip
    assert no_token.returncode == 1 and "UNAUTHENTICATED" in no_token.stderr, no_token.stderr


def test_the_replicas_health_check_of_the_compose_file(stack, certs: Path) -> None:
    _, replicas = stack
    for replica in replicas:
        done = foldserve("health", "--target", replica.target, *client_flags(certs, token=False))
        assert done.returncode == 0, done.stderr
