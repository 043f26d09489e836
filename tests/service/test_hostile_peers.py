"""Peers that misbehave: `--max-connections` (each port holds at most N connections per worker;
one more is closed as it is accepted, a freed place is taken again), HTTP/2 rapid reset
(CVE-2023-44487) on the gRPC port and a pipelining flood on the HTTP port in bounded memory."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from foldserve._proto.foldserve.v1 import predictor_pb2 as pb
from foldserve._proto.foldserve.v1 import predictor_pb2_grpc as pb_grpc
from foldserve.server.config import ConfigError

LIMIT = 3
# An HTTP/2 client's first bytes: the preface and an empty SETTINGS frame.
H2_OPENING = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])
HEAD = b"GET /v2/health/live HTTP/1.1\r\nhost: x\r\n\r\n"


def _open(port: int, hello: bytes) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall(hello)
    return sock


def _closed_by_server(sock: socket.socket, seconds: float = 1.0) -> bool:
    """True when the server closes `sock` (EOF or reset) within `seconds`; answers are read."""
    sock.settimeout(0.2)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if sock.recv(65536) == b"":
                return True
        except TimeoutError:
            continue
        except ConnectionResetError:
            return True
    return False


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_one_connection_over_the_limit_is_closed_and_a_freed_place_is_taken(
    serve, tiny_model, protocol: str
) -> None:
    served = serve(tiny_model, max_connections=LIMIT)
    port = served.port if protocol == "grpc" else served.running.http_port
    hello = H2_OPENING if protocol == "grpc" else HEAD
    held = [_open(port, hello) for _ in range(LIMIT)]
    try:
        assert not any(_closed_by_server(s, 0.3) for s in held)
        extra = _open(port, hello)
        assert _closed_by_server(extra), "a connection over the limit stayed open"
        extra.close()
        held.pop().close()
        time.sleep(0.2)  # the server sees the close
        again = _open(port, hello)
        held.append(again)
        assert not _closed_by_server(again, 0.5), "a freed place was not taken again"
    finally:
        for sock in held:
            sock.close()
    time.sleep(0.2)
    reply = pb_grpc.PredictorStub(served.channel).Predict(
        pb.PredictRequest(features=[0.5] * 64), timeout=10
    )
    assert reply.class_name


def test_the_limit_is_a_positive_count() -> None:
    import argparse

    from foldserve.server.config import add_serve_arguments, resolve

    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    args = parser.parse_args(["--model", "m.onnx", "--max-connections", "0"])
    with pytest.raises(ConfigError, match="--max-connections"):
        resolve(args, environ={})


def test_rapid_reset_leaves_a_worker_in_bounded_memory(tmp_path: Path, tiny_model_path) -> None:
    """One connection opening and cancelling streams for 2 s grew a worker by ~1 GB before
    grpc.max_concurrent_streams was set (grpc core counts reset streams against it)."""
    from tests.service.subprocess_server import server_process
    from tests.service.test_overload import rss_mb

    with server_process(tiny_model_path, tmp_path) as server:
        before = rss_mb(server.process.pid)
        attack = [sys.executable, "-m", "foldserve.bench.chaos.peers", "reset", "grpc"]
        done = subprocess.run(
            [*attack, str(server.port), "2", "1"], capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        grown = rss_mb(server.process.pid) - before
        assert grown < 100, f"RSS grew {grown:.0f} MB under rapid reset: {done.stdout}"
        with socket.create_connection(("127.0.0.1", server.http_port), timeout=5) as sock:
            sock.sendall(HEAD)
            assert b" 200 " in sock.recv(4096)
        assert server.terminate() == 0


def _answers(sock: socket.socket, seconds: float = 5.0) -> tuple[int, bool]:
    """(HTTP answers read, whether the server closed) within `seconds`."""
    sock.settimeout(seconds)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except TimeoutError:
        return data.count(b"HTTP/1.1 "), False
    except ConnectionResetError:
        pass
    return data.count(b"HTTP/1.1 "), True


def test_pipelined_requests_are_answered_and_a_pipelining_flood_is_cut_off(shared_server) -> None:
    from foldserve.server.http_server import PIPELINED_REQUESTS

    port = shared_server.running.http_port
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(HEAD * 3)
        sock.settimeout(5)
        data = b""
        while data.count(b"HTTP/1.1 200") < 3:
            data += sock.recv(65536)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(HEAD * 2000)
        answered, closed = _answers(sock)
    assert closed, "a connection pipelining 2000 requests stayed open"
    assert answered <= PIPELINED_REQUESTS + 2, answered
