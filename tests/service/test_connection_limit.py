"""`--max-connections`: each port holds at most N connections (per worker); one more is closed
as it is accepted, and a place freed is taken again."""

from __future__ import annotations

import socket
import time

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
