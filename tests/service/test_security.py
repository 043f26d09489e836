"""TLS, mutual TLS and bearer tokens, with certificates the tests make themselves."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from foldserve._proto.foldserve.v1 import predictor_pb2 as pb
from foldserve._proto.foldserve.v1 import predictor_pb2_grpc as pb_grpc
from tests.service.certs import Pem, issue, make_ca
from tests.service.conftest import Served, ServeFactory

FEATURES = pb.PredictRequest(features=[0.5] * 64)
TOKEN = "s3cret-Token_for.tests"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Pem]:
    folder = tmp_path_factory.mktemp("pki")
    ca, other = make_ca(folder, "test-ca"), make_ca(folder, "other-ca")
    return {
        "ca": ca,
        "other": other,
        "server": issue(folder, ca, "server"),
        "expired-server": issue(folder, ca, "expired-server", expired=True),
        "client": issue(folder, ca, "client", client=True),
        "expired-client": issue(folder, ca, "expired-client", client=True, expired=True),
        "foreign-client": issue(folder, other, "foreign-client", client=True),
    }


def tls_channel(served: Served, ca: Pem, client: Pem | None = None) -> grpc.Channel:
    credentials = grpc.ssl_channel_credentials(
        root_certificates=ca.cert.read_bytes(),
        private_key=client.key.read_bytes() if client else None,
        certificate_chain=client.cert.read_bytes() if client else None,
    )
    return grpc.secure_channel(f"127.0.0.1:{served.port}", credentials)


def predict(channel: grpc.Channel, token: str | None = None) -> grpc.StatusCode:
    metadata = (("authorization", f"Bearer {token}"),) if token is not None else None
    try:
        pb_grpc.PredictorStub(channel).Predict(FEATURES, timeout=5, metadata=metadata)
    except grpc.RpcError as exc:
        return exc.code()
    finally:
        channel.close()
    return grpc.StatusCode.OK


def tls_server(serve: ServeFactory, tiny_model, pki, server: str = "server", **settings) -> Served:
    cert = pki[server]
    return serve(tiny_model, tls_cert=str(cert.cert), tls_key=str(cert.key), **settings)


def test_tls(serve: ServeFactory, tiny_model, pki) -> None:
    served = tls_server(serve, tiny_model, pki)
    assert predict(tls_channel(served, pki["ca"])) == grpc.StatusCode.OK
    assert predict(tls_channel(served, pki["other"])) == grpc.StatusCode.UNAVAILABLE  # wrong CA
    plaintext = grpc.insecure_channel(f"127.0.0.1:{served.port}")
    assert predict(plaintext) == grpc.StatusCode.UNAVAILABLE


def test_an_expired_server_certificate_is_refused_by_clients(
    serve: ServeFactory, tiny_model, pki
) -> None:
    served = tls_server(serve, tiny_model, pki, "expired-server")
    assert predict(tls_channel(served, pki["ca"])) == grpc.StatusCode.UNAVAILABLE


def test_mutual_tls(serve: ServeFactory, tiny_model, pki) -> None:
    served = tls_server(serve, tiny_model, pki, tls_client_ca=str(pki["ca"].cert))
    assert predict(tls_channel(served, pki["ca"], pki["client"])) == grpc.StatusCode.OK
    for client in (None, pki["expired-client"], pki["foreign-client"]):
        assert predict(tls_channel(served, pki["ca"], client)) == grpc.StatusCode.UNAVAILABLE


def test_bearer_token(serve: ServeFactory, tiny_model, tmp_path: Path, caplog) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    served = serve(tiny_model, auth_token_file=str(token_file), access_log=True)
    channel = lambda: grpc.insecure_channel(f"127.0.0.1:{served.port}")  # noqa: E731
    with caplog.at_level("INFO"):
        assert predict(channel()) == grpc.StatusCode.UNAUTHENTICATED
        assert predict(channel(), "wrong") == grpc.StatusCode.UNAUTHENTICATED
        assert predict(channel(), TOKEN + "x") == grpc.StatusCode.UNAUTHENTICATED
        assert predict(channel(), TOKEN) == grpc.StatusCode.OK
    assert served.refused("foldserve_requests_total", method="Predict", code="UNAUTHENTICATED") == 3
    assert TOKEN not in caplog.text
    assert caplog.text.count("Predict grpc UNAUTHENTICATED") == 3
    with pytest.raises(grpc.RpcError) as caught:
        pb_grpc.PredictorStub(channel()).Predict(FEATURES, timeout=5)
    assert "authorization: missing; send the header 'authorization: Bearer <token>'" in (
        caught.value.details()
    )
    # Health stays open, for probes.
    reply = health_pb2_grpc.HealthStub(channel()).Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_the_token_may_come_from_the_environment(serve: ServeFactory, tiny_model) -> None:
    served = serve(tiny_model, auth_token=TOKEN)
    channel = grpc.insecure_channel(f"127.0.0.1:{served.port}")
    assert predict(channel, TOKEN) == grpc.StatusCode.OK


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"--tls-cert": "missing.crt", "--tls-key": "server.key"}, "--tls-cert 'missing.crt'"),
        ({"--tls-cert": "server.key", "--tls-key": "server.key"}, "holds no PEM CERTIFICATE"),
        (
            {"--tls-cert": "server.crt", "--tls-key": "client.key"},
            "--tls-key 'client.key' does not match the certificate in --tls-cert 'server.crt'",
        ),
        ({"--tls-cert": "server.crt"}, "--tls-cert and --tls-key go together"),
        ({"--tls-client-ca": "test-ca.crt"}, "needs --tls-cert and --tls-key"),
        ({"--auth-token-file": "empty"}, "--auth-token-file 'empty' is empty"),
    ],
)
def test_unusable_tls_or_token_files_stop_the_start_with_one_line(
    pki, tiny_model_path: Path, files: dict[str, str], message: str
) -> None:
    import subprocess

    from tests.service.subprocess_server import env, foldserve_command

    folder = pki["ca"].cert.parent
    (folder / "empty").write_text("")
    args = [part for flag, name in files.items() for part in (flag, name)]
    result = subprocess.run(
        foldserve_command("serve", "--model", str(tiny_model_path), "--host", "127.0.0.1",
                          "--port", "0", "--http-port", "0", "--metrics-port", "0", *args),
        capture_output=True, text=True, cwd=folder, env=env(), timeout=60,
    )  # fmt: skip
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
