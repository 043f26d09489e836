"""`foldserve serve` as a real process: refusing to start, draining on SIGTERM, no torch."""

from __future__ import annotations

import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import grpc
import pytest

from foldserve._proto.foldserve.v1 import predictor_pb2 as pb
from foldserve._proto.foldserve.v1 import predictor_pb2_grpc as pb_grpc
from tests.service.model_files import write_tiny_model
from tests.service.subprocess_server import REPO, env, foldserve_command, server_process


def run_serve(*args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(
        foldserve_command("serve", "--host", "127.0.0.1", "--metrics-port", "0", *args),
        capture_output=True, text=True, cwd=REPO, env=env(), timeout=timeout,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: d / "missing.onnx", "does not exist"),
        (lambda d: (d / "c.onnx").write_bytes(b"\x08\x07garbage") and d / "c.onnx",
         "not a loadable ONNX model"),
        (lambda d: (d / "config.json").write_text('{"labels": []}') and
         write_tiny_model(d / "plain.onnx", meta={}), "unknown key 'labels'"),
    ],
    ids=["missing", "corrupt", "bad-config"],
)  # fmt: skip
def test_refuses_a_bad_model_file(tmp_path: Path, make, message: str) -> None:
    result = run_serve("--model", str(make(tmp_path)), "--port", "0", "--http-port", "0")
    assert result.returncode != 0
    assert message in result.stderr
    assert "foldserve serve: error:" in result.stderr


def test_refuses_a_port_in_use(tmp_path: Path, tiny_model_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_serve("--model", str(tiny_model_path), "--port", str(port))
    assert result.returncode == 2
    # Only our line: no gRPC C-core log line ("E1201 ... add_port.cc:83] ...") before it.
    assert (
        result.stderr == f"foldserve serve: error: cannot listen on 127.0.0.1:{port}: port in use\n"
    )


def test_refuses_a_second_server_on_the_same_port(tmp_path: Path, tiny_model_path: Path) -> None:
    with server_process(tiny_model_path, tmp_path) as first:
        result = run_serve("--model", str(tiny_model_path), "--port", str(first.port))
        assert result.returncode == 2
        assert result.stderr.splitlines() == [
            f"foldserve serve: error: cannot listen on 127.0.0.1:{first.port}: port in use"
        ]
        assert first.terminate() == 0


def test_refuses_a_bad_setting(tiny_model_path: Path) -> None:
    result = run_serve("--model", str(tiny_model_path), "--port", "99999")
    assert result.returncode == 2
    assert "--port: 99999 is not a port number" in result.stderr


def test_no_torch_in_a_running_server(tmp_path: Path, tiny_model_path: Path) -> None:
    """Neither torch nor training/ is imported by a running `foldserve serve` process."""
    script = tmp_path / "probe.py"
    script.write_text(
        "import os, signal, sys, threading, time\n"
        "from foldserve.cli import main\n"
        "def probe():\n"
        "    import grpc\n"
        "    from grpc_health.v1 import health_pb2, health_pb2_grpc\n"
        "    while True:\n"
        "        time.sleep(0.1)\n"
        "        log = open(sys.argv[2]).read()\n"
        "        if 'grpc_port=' in log:\n"
        "            break\n"
        "    port = log.split('grpc_port=')[1].split()[0]\n"
        "    stub = health_pb2_grpc.HealthStub(grpc.insecure_channel('127.0.0.1:' + port))\n"
        "    assert stub.Check(health_pb2.HealthCheckRequest(), timeout=5).status == 1\n"
        "    loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'training'))\n"
        "    print('LOADED', loaded, flush=True)\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "threading.Thread(target=probe, daemon=True).start()\n"
        "sys.exit(main(['serve', '--model', sys.argv[1], '--host', '127.0.0.1', '--port', '0',\n"
        "               '--http-port', '0', '--metrics-port', '0', '--workers', '1']))\n"
    )
    log = tmp_path / "probe.log"
    with log.open("w") as sink:
        result = subprocess.run(
            [*foldserve_command()[:1], str(script), str(tiny_model_path), str(log)],
            stdout=subprocess.PIPE, stderr=sink, text=True, cwd=REPO, env=env(), timeout=60,
        )  # fmt: skip
    assert result.returncode == 0, log.read_text()
    assert "LOADED []" in result.stdout


def test_no_torch_libraries_mapped_by_foldserve_serve(
    tmp_path: Path, tiny_model_path: Path
) -> None:
    with server_process(tiny_model_path, tmp_path) as server:
        maps = Path(f"/proc/{server.process.pid}/maps").read_text()
        assert "libtorch" not in maps
        assert server.terminate() == 0


def test_sigterm_during_a_burst_fails_no_accepted_call(
    tmp_path: Path, tiny_model_path: Path
) -> None:
    """Calls either succeed or are refused UNAVAILABLE (never admitted); exit code 0."""
    with server_process(tiny_model_path, tmp_path, ["--grace-seconds", "10"]) as server:
        channel = grpc.insecure_channel(server.target)
        stub = pb_grpc.PredictorStub(channel)
        request = pb.PredictRequest(features=[0.5] * 64)
        stub.Predict(request, timeout=10)
        codes: list[grpc.StatusCode] = []
        details: list[str] = []
        lock = threading.Lock()
        stop_at = time.monotonic() + 20

        def client() -> None:
            while time.monotonic() < stop_at:
                try:
                    stub.Predict(request, timeout=10)
                    code = grpc.StatusCode.OK
                except grpc.RpcError as exc:
                    code = exc.code()
                    if code != grpc.StatusCode.UNAVAILABLE:
                        details.append(f"{time.monotonic():.3f} {code} {exc.details()}")
                with lock:
                    codes.append(code)
                if code == grpc.StatusCode.UNAVAILABLE:
                    return

        threads = [threading.Thread(target=client) for _ in range(6)]
        for thread in threads:
            thread.start()
        time.sleep(0.5)
        ok_before = codes.count(grpc.StatusCode.OK)
        details.append(f"{time.monotonic():.3f} SIGTERM")
        server.process.send_signal(signal.SIGTERM)
        exit_code = server.process.wait(30)
        for thread in threads:
            thread.join(30)
        channel.close()
    assert exit_code == 0, server.stderr()
    assert ok_before > 10
    assert set(codes) <= {grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE}, details
    assert "draining" in server.stderr()


def test_sigint_also_drains(tmp_path: Path, tiny_model_path: Path) -> None:
    with server_process(tiny_model_path, tmp_path) as server:
        server.process.send_signal(signal.SIGINT)
        assert server.process.wait(30) == 0


def test_open_stream_finishes_within_grace(tmp_path: Path, tiny_model_path: Path) -> None:
    """A stream admitted before SIGTERM keeps being answered until the client closes it."""
    import queue

    with server_process(tiny_model_path, tmp_path, ["--grace-seconds", "20"]) as server:
        channel = grpc.insecure_channel(server.target)
        stub = pb_grpc.PredictorStub(channel)
        outbox: queue.Queue = queue.Queue()

        def requests():
            while (item := outbox.get()) is not None:
                yield item

        replies = stub.PredictStream(requests(), timeout=30)
        outbox.put(pb.PredictRequest(features=[0.5] * 64, request_id="before"))
        assert next(replies).request_id == "before"
        server.process.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        assert server.process.poll() is None  # still draining: the stream is open
        # A new call is refused while the open stream is still served.
        with pytest.raises(grpc.RpcError) as caught:
            stub.Predict(pb.PredictRequest(features=[0.5] * 64), timeout=5)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "draining" in caught.value.details()
        outbox.put(pb.PredictRequest(features=[0.5] * 64, request_id="after"))
        assert next(replies).prediction.request_id == "after"
        outbox.put(None)
        assert list(replies) == []
        assert server.process.wait(30) == 0
        channel.close()


def test_drain_delay_serves_while_health_says_not_serving(
    tmp_path: Path, tiny_model_path: Path
) -> None:
    """With --drain-delay-seconds, SIGTERM turns readiness NOT_SERVING at once, liveness stays
    SERVING, and calls are still answered OK until the delay is over; then refusals, exit 0."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from foldserve.server.app import LIVENESS_SERVICE

    delay = 4.0
    args = ["--drain-delay-seconds", str(delay), "--grace-seconds", "5"]
    with server_process(tiny_model_path, tmp_path, args) as server:
        channel = grpc.insecure_channel(server.target)
        stub = pb_grpc.PredictorStub(channel)
        health = health_pb2_grpc.HealthStub(channel)
        request = pb.PredictRequest(features=[0.5] * 64)

        def status(service: str) -> int:
            reply = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            return reply.status

        assert status(LIVENESS_SERVICE) == health_pb2.HealthCheckResponse.SERVING
        stub.Predict(request, timeout=5)
        signalled = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        deadline = signalled + 3
        while status("") != health_pb2.HealthCheckResponse.NOT_SERVING:
            assert time.monotonic() < deadline, "readiness never turned NOT_SERVING"
            time.sleep(0.05)
        assert status("foldserve.v1.Predictor") == health_pb2.HealthCheckResponse.NOT_SERVING
        assert status(LIVENESS_SERVICE) == health_pb2.HealthCheckResponse.SERVING
        served = 0
        while True:  # OK during the delay, then UNAVAILABLE (never anything else)
            try:
                stub.Predict(request, timeout=5)
                served += 1
            except grpc.RpcError as exc:
                assert exc.code() == grpc.StatusCode.UNAVAILABLE, exc
                refused_after = time.monotonic() - signalled
                break
            time.sleep(0.02)
        exit_code = server.process.wait(30)
        channel.close()
    assert exit_code == 0, server.stderr()
    assert served > 0
    assert refused_after >= delay, f"refused {refused_after:.2f} s after SIGTERM"
