"""A new certificate, key or client CA is served without a restart: calls in flight and open
connections go on, new connections get the new certificate on both ports, and files that do not
check out are refused while the certificate served before stays."""

from __future__ import annotations

import json
import shutil
import signal
import time
import urllib.request
from pathlib import Path

import grpc
import pytest

from foldserve.server.credentials import SETTLE_SECONDS
from tests.service.certs import Pem, issue, make_ca
from tests.service.conftest import Served, ServeFactory
from tests.service.rotation_load import (
    GrpcClient,
    HttpClient,
    Load,
    Record,
    client_context,
    serial,
    served_serial,
    wait_for,
)
from tests.service.subprocess_server import server_process

POLL = 0.05  # --credentials-poll-seconds in these tests


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Pem]:
    folder = tmp_path_factory.mktemp("rotation-pki")
    ca, other = make_ca(folder, "rotation-ca"), make_ca(folder, "other-ca")
    return {
        "ca": ca,
        "other": other,
        "first": issue(folder, ca, "first"),
        "second": issue(folder, ca, "second"),
        "client": issue(folder, ca, "client", client=True),
        "other-client": issue(folder, other, "other-client", client=True),
    }


def install(pem: Pem, live: Path) -> None:
    """Write a certificate and its key over the served files, one after the other."""
    shutil.copyfile(pem.cert, live / "server.crt")
    shutil.copyfile(pem.key, live / "server.key")


def tls_server(serve: ServeFactory, tiny_model, pki, live: Path, **settings) -> Served:
    install(pki["first"], live)
    return serve(
        tiny_model,
        tls_cert=str(live / "server.crt"),
        tls_key=str(live / "server.key"),
        credentials_poll_seconds=POLL,
        **settings,
    )


def reloads(served: Served, result: str) -> float:
    labels = {"kind": "tls", "result": result}
    return served.registry.get_sample_value("foldserve_credentials_reloads_total", labels) or 0


def test_a_new_certificate_serves_new_connections_while_calls_go_on(
    serve: ServeFactory, tiny_model, pki, tmp_path: Path
) -> None:
    served = tls_server(serve, tiny_model, pki, tmp_path)
    ca = pki["ca"]
    first, second = serial(pki["first"]), serial(pki["second"])
    grpc_client = GrpcClient(
        f"127.0.0.1:{served.port}", grpc.ssl_channel_credentials(ca.cert.read_bytes())
    )
    https_client = HttpClient(served.running.http_port, client_context(ca))
    with Load(grpc=grpc_client, https=https_client) as load:
        load.wait_calls(10)
        install(pki["second"], tmp_path)
        loaded = wait_for(lambda: reloads(served, "loaded") == 1)
        load.wait_calls(10, after=loaded)  # calls go on after the rotation
    assert [r for r in load.records if r.error] == []
    assert reloads(served, "refused") == 0  # the pair written one file after the other settles
    # New connections see the new certificate as soon as it is loaded, on both ports; the kept
    # HTTPS connection keeps the certificate of its handshake and its calls go on.
    fresh = [r.serial for r in load.calls("https")[0::2]]
    switch = fresh.index(second)
    assert switch > 0 and set(fresh[:switch]) == {first} and set(fresh[switch:]) == {second}
    assert {r.serial for r in load.calls("https")[1::2]} == {first}
    assert served_serial(served.port, ca) == served_serial(served.running.http_port, ca) == second


@pytest.mark.parametrize(
    ("broken", "message"),
    [
        ("garbage", "--tls-cert '{cert}' holds no PEM CERTIFICATE"),
        ("foreign key", "--tls-key '{key}' does not match the certificate in --tls-cert"),
        ("empty key", "--tls-key '{key}' is empty"),
        ("missing", "--tls-cert '{cert}' cannot be read: No such file or directory"),
    ],
    ids=["garbage", "foreign key", "empty key", "missing"],
)
def test_files_that_do_not_check_out_are_refused_and_the_certificate_stays(
    serve: ServeFactory, tiny_model, pki, tmp_path: Path, caplog, broken: str, message: str
) -> None:
    served = tls_server(serve, tiny_model, pki, tmp_path)
    ca, cert, key = pki["ca"], tmp_path / "server.crt", tmp_path / "server.key"
    with caplog.at_level("ERROR", logger="foldserve.server.credentials"):
        if broken == "garbage":
            cert.write_text("not a certificate\n")
        elif broken == "foreign key":
            shutil.copyfile(pki["second"].key, key)
        elif broken == "empty key":
            key.write_text("")
        else:
            cert.unlink()
        wait_for(lambda: reloads(served, "refused") == 1)
    expected = message.format(cert=cert, key=key)
    assert len(caplog.records) == 1 and caplog.records[0].getMessage().startswith(expected)
    assert "still serving the previous TLS certificate" in caplog.text
    refused = {"kind": "tls"}
    assert served.registry.get_sample_value("foldserve_credentials_refused", refused) == 1
    for port in (served.port, served.running.http_port):
        assert served_serial(port, ca) == serial(pki["first"])
    time.sleep(4 * POLL)  # no new look at unchanged files: refused once, logged once
    assert reloads(served, "refused") == 1 and len(caplog.records) == 1
    install(pki["second"], tmp_path)  # fixed: served from then on
    wait_for(lambda: reloads(served, "loaded") == 1, timeout=5 + SETTLE_SECONDS)
    assert served.registry.get_sample_value("foldserve_credentials_refused", refused) == 0
    for port in (served.port, served.running.http_port):
        assert served_serial(port, ca) == serial(pki["second"])


def test_a_new_client_ca_decides_which_client_certificates_new_connections_take(
    serve: ServeFactory, tiny_model, pki, tmp_path: Path
) -> None:
    shutil.copyfile(pki["ca"].cert, tmp_path / "clients.crt")
    served = tls_server(
        serve, tiny_model, pki, tmp_path, tls_client_ca=str(tmp_path / "clients.crt")
    )
    ca = pki["ca"]

    def answers(client: Pem) -> tuple[bool, bool]:
        """(gRPC, HTTPS): does a new connection with this client certificate get an answer?"""
        credentials = grpc.ssl_channel_credentials(
            ca.cert.read_bytes(), client.key.read_bytes(), client.cert.read_bytes()
        )
        grpc_client = GrpcClient(f"127.0.0.1:{served.port}", credentials)
        https_client = HttpClient(served.running.http_port, client_context(ca, client))
        results = []
        for each in (grpc_client, https_client):
            try:
                each.call(0, Record("probe", 0.0, 0.0, None))
                results.append(True)
            except (grpc.RpcError, OSError):
                results.append(False)
        return results[0], results[1]

    assert answers(pki["client"]) == (True, True)
    assert answers(pki["other-client"]) == (False, False)
    shutil.copyfile(pki["other"].cert, tmp_path / "clients.crt")
    wait_for(lambda: reloads(served, "loaded") == 1)
    assert answers(pki["other-client"]) == (True, True)
    assert answers(pki["client"]) == (False, False)


def test_sighup_has_every_worker_serve_the_new_certificate_and_token(
    tmp_path: Path, tiny_model_path: Path, pki
) -> None:
    """With --workers 2 and no polling, SIGHUP to the supervisor reaches every worker."""
    live = tmp_path / "live"
    live.mkdir()
    install(pki["first"], live)
    (live / "token").write_text("old-token\n")
    args = ["--workers", "2", "--log-format", "json", "--credentials-poll-seconds", "0",
            "--tls-cert", str(live / "server.crt"), "--tls-key", str(live / "server.key"),
            "--auth-token-file", str(live / "token")]  # fmt: skip
    ca, second = pki["ca"], serial(pki["second"])
    with server_process(tiny_model_path, tmp_path, args) as server:
        install(pki["second"], live)
        (live / "token").write_text("new-token\n")
        time.sleep(0.3)
        assert served_serial(server.port, ca) == serial(pki["first"]), "no look without SIGHUP"
        server.process.send_signal(signal.SIGHUP)
        wait_for(lambda: len(_pids(server, "new bearer token")) == 2)
        assert len(_pids(server, "new TLS certificate")) == 2
        url = f"http://127.0.0.1:{server.metrics_port}/metrics"
        text = urllib.request.urlopen(url, timeout=10).read().decode()
        for kind in ("tls", "token"):  # summed over the workers
            assert (
                f'foldserve_credentials_reloads_total{{kind="{kind}",result="loaded"}} 2.0' in text
            )
        for port in (server.port, server.http_port):
            assert {served_serial(port, ca) for _ in range(8)} == {second}
        grpc_credentials = grpc.ssl_channel_credentials(ca.cert.read_bytes())
        for token, expected in (("new-token", None), ("old-token", "UNAUTHENTICATED")):
            for _ in range(8):
                grpc_client = GrpcClient(server.target, grpc_credentials, lambda t=token: t)
                https_client = HttpClient(server.http_port, client_context(ca), lambda t=token: t)
                assert _code(grpc_client) == expected
                assert _code(https_client) == (expected and "HTTP 401")
        assert server.terminate() == 0, server.stderr()


def _pids(server, message: str) -> set[int]:
    lines = [json.loads(line) for line in server.stderr().splitlines() if line.startswith("{")]
    return {r["pid"] for r in lines if r["message"].startswith(message)}


def _code(client: GrpcClient | HttpClient) -> str | None:
    """None for an answer, else the gRPC status or "HTTP <status>"."""
    try:
        client.call(0, Record("probe", 0.0, 0.0, None))
    except grpc.RpcError as exc:
        return exc.code().name
    except RuntimeError as exc:
        return str(exc).split(":")[0]
    return None
