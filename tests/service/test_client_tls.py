"""The client commands (`foldserve predict`, `health`, `fuzz`) over TLS, mutual TLS and a token."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.service.certs import Pem, issue, make_ca
from tests.service.conftest import Served, ServeFactory
from tests.service.subprocess_server import REPO, env, foldserve_command

TOKEN = "client-t0ken"
EXAMPLES = json.dumps([[0.5] * 64, [0.25] * 64, [1.0] * 64])


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("client-pki")
    ca: Pem = make_ca(folder, "ca")
    server, client = issue(folder, ca, "server"), issue(folder, ca, "client", client=True)
    token = folder / "token"
    token.write_text(TOKEN + "\n")
    return {
        "ca": ca.cert,
        "server-cert": server.cert,
        "server-key": server.key,
        "cert": client.cert,
        "key": client.key,
        "token": token,
    }


@pytest.fixture
def locked(serve: ServeFactory, tiny_model, pki) -> Served:
    """A server with mutual TLS and a bearer token."""
    return serve(
        tiny_model, tls_cert=str(pki["server-cert"]), tls_key=str(pki["server-key"]),
        tls_client_ca=str(pki["ca"]), auth_token_file=str(pki["token"]),
    )  # fmt: skip


def foldserve(*args: str, stdin: str = "", **extra_env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        foldserve_command(*args), input=stdin, capture_output=True, text=True, cwd=REPO,
        env=env(**extra_env), timeout=60,
    )  # fmt: skip


def tls_flags(pki: dict[str, Path], *, with_cert: bool = True) -> list[str]:
    flags = ["--tls-ca", str(pki["ca"])]
    if with_cert:
        flags += ["--tls-cert", str(pki["cert"]), "--tls-key", str(pki["key"])]
    return flags


def test_predict_over_mutual_tls_with_a_token_file(locked: Served, pki) -> None:
    target = f"127.0.0.1:{locked.port}"
    done = foldserve(
        "predict", "--target", target, "--data", "-", *tls_flags(pki),
        "--auth-token-file", str(pki["token"]), stdin=EXAMPLES,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(lines) == 3 and all(line["class"].startswith("class_") for line in lines)


def test_predict_takes_the_token_from_the_environment(locked: Served, pki) -> None:
    target = f"127.0.0.1:{locked.port}"
    done = foldserve(
        "predict", "--target", target, "--data", "-", *tls_flags(pki),
        stdin=EXAMPLES, FOLDSERVE_AUTH_TOKEN=TOKEN,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr


def test_predict_without_the_token_names_the_missing_header(locked: Served, pki) -> None:
    done = foldserve(
        "predict", "--target", f"127.0.0.1:{locked.port}", "--data", "-", *tls_flags(pki),
        stdin=EXAMPLES,
    )  # fmt: skip
    assert done.returncode == 1
    assert "UNAUTHENTICATED" in done.stderr and "authorization: missing" in done.stderr


def test_predict_with_a_wrong_ca_fails_and_says_so(locked: Served, pki, tmp_path: Path) -> None:
    other = make_ca(tmp_path, "other")
    done = foldserve(
        "predict", "--target", f"127.0.0.1:{locked.port}", "--data", "-",
        "--tls-ca", str(other.cert), "--tls-cert", str(pki["cert"]), "--tls-key", str(pki["key"]),
        "--auth-token-file", str(pki["token"]), "--timeout", "3", stdin=EXAMPLES,
    )  # fmt: skip
    assert done.returncode == 1
    assert "UNAVAILABLE" in done.stderr


def test_health_over_tls_needs_no_token(locked: Served, pki) -> None:
    target = f"127.0.0.1:{locked.port}"
    assert foldserve("health", "--target", target, *tls_flags(pki)).returncode == 0
    # localhost is in the certificate; the override names it while calling 127.0.0.1.
    named = foldserve(
        "health", "--target", target, *tls_flags(pki), "--tls-server-name", "localhost"
    )
    assert named.returncode == 0, named.stderr
    plaintext = foldserve("health", "--target", target, "--timeout", "2")
    assert plaintext.returncode == 1


def test_fuzz_over_mutual_tls_with_a_token(locked: Served, pki) -> None:
    done = foldserve(
        "fuzz", "--target", f"127.0.0.1:{locked.port}", "--calls", "60", *tls_flags(pki),
        "--auth-token-file", str(pki["token"]),
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--tls-ca", "missing.pem"], "--tls-ca 'missing.pem' cannot be read"),
        (["--tls-cert", "client.crt"], "--tls-cert and --tls-key go together"),
        (["--auth-token-file", "empty"], "--auth-token-file 'empty' is empty"),
    ],
)
def test_unusable_client_files_stop_with_one_line(flags, message, tmp_path: Path) -> None:
    (tmp_path / "empty").write_text("")
    done = subprocess.run(
        foldserve_command("health", "--target", "127.0.0.1:1", *flags),
        capture_output=True, text=True, cwd=tmp_path, env=env(), timeout=60,
    )  # fmt: skip
    assert done.returncode == 1
    [line] = done.stderr.strip().splitlines()
    assert line.startswith(f"foldserve health: {message}")
