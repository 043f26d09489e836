"""Clients for the rotation tests: calls over gRPC and HTTP(S) in a loop on threads, each call
recorded (when it started and ended, what it carried, how it ended, the certificate it saw), and
a bare TLS handshake that tells which certificate a port serves to a new connection."""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import grpc

from foldserve._proto.foldserve.v1 import predictor_pb2 as pb
from foldserve._proto.foldserve.v1 import predictor_pb2_grpc as pb_grpc
from tests.service.certs import Pem

FEATURES = pb.PredictRequest(features=[0.5] * 64)
INFER_PATH = "/v2/models/foldserve/infer"
INFER_BODY = json.dumps(
    {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 64], "data": [0.5] * 64}]}
).encode()
Token = Callable[[], str | None]


def serial(pem: Pem) -> str:
    """A certificate's serial number as `getpeercert()` writes it."""
    text = format(pem.certificate.serial_number, "X")
    return text if len(text) % 2 == 0 else "0" + text


def client_context(ca: Pem, client: Pem | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca.cert))
    if client is not None:
        context.load_cert_chain(client.cert, client.key)
    return context


def served_serial(port: int, ca: Pem, client: Pem | None = None) -> str:
    """The serial of the certificate a new TLS connection to `port` sees (ALPN h2, as gRPC's)."""
    context = client_context(ca, client)
    context.set_alpn_protocols(["h2", "http/1.1"])
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        return tls.getpeercert()["serialNumber"]


@dataclass
class Record:
    client: str
    started: float
    ended: float
    token: str | None
    error: str | None = None
    serial: str | None = None


@dataclass
class GrpcClient:
    """Predict over gRPC: every other call on one kept channel, the others on a new connection."""

    target: str
    credentials: grpc.ChannelCredentials | None = None
    token: Token = lambda: None
    _kept: grpc.Channel | None = field(default=None, init=False)

    def channel(self) -> grpc.Channel:
        options = [("grpc.use_local_subchannel_pool", 1)]
        if self.credentials is None:
            return grpc.insecure_channel(self.target, options=options)
        return grpc.secure_channel(self.target, self.credentials, options=options)

    def call(self, index: int, record: Record) -> None:
        token = record.token = self.token()
        metadata = None if token is None else (("authorization", f"Bearer {token}"),)
        if index % 2:
            self._kept = self._kept or self.channel()
            pb_grpc.PredictorStub(self._kept).Predict(FEATURES, timeout=5, metadata=metadata)
            return
        with self.channel() as channel:
            pb_grpc.PredictorStub(channel).Predict(FEATURES, timeout=5, metadata=metadata)

    def close(self) -> None:
        if self._kept is not None:
            self._kept.close()


@dataclass
class HttpClient:
    """ModelInfer over HTTP(S): every other call on one kept connection, the others on a new one;
    each record keeps the certificate the connection saw."""

    port: int
    context: ssl.SSLContext | None = None
    token: Token = lambda: None
    _kept: http.client.HTTPConnection | None = field(default=None, init=False)

    def connection(self) -> http.client.HTTPConnection:
        if self.context is None:
            return http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        return http.client.HTTPSConnection("127.0.0.1", self.port, timeout=5, context=self.context)

    def call(self, index: int, record: Record) -> None:
        token = record.token = self.token()
        headers = {"content-type": "application/json"}
        if token is not None:
            headers["authorization"] = f"Bearer {token}"
        kept = bool(index % 2)
        if kept:
            self._kept = self._kept or self.connection()
        connection = self._kept if kept else self.connection()
        try:
            connection.request("POST", INFER_PATH, INFER_BODY, headers)
            answer = connection.getresponse()
            body = answer.read()
            if isinstance(connection.sock, ssl.SSLSocket):
                record.serial = connection.sock.getpeercert()["serialNumber"]
            if answer.status != 200:
                raise RuntimeError(f"HTTP {answer.status}: {body[:200]!r}")
        finally:
            if not kept:
                connection.close()

    def close(self) -> None:
        if self._kept is not None:
            self._kept.close()


class Load:
    """One thread per client, calling it in a loop until the `with` block ends."""

    def __init__(self, **clients: GrpcClient | HttpClient) -> None:
        self.clients = clients
        self.records: list[Record] = []
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(name, client), daemon=True)
            for name, client in clients.items()
        ]

    def _run(self, name: str, client: GrpcClient | HttpClient) -> None:
        index = 0
        while not self._stop.is_set() and index < 100_000:
            record = Record(name, time.monotonic(), 0.0, None)
            try:
                client.call(index, record)
            except grpc.RpcError as exc:
                record.error = exc.code().name
            except Exception as exc:  # every way a call can fail is a failure to count
                record.error = repr(exc)
            record.ended = time.monotonic()
            self.records.append(record)
            index += 1
        client.close()

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)

    def calls(self, client: str, after: float = 0.0) -> list[Record]:
        return [r for r in self.records if r.client == client and r.started >= after]

    def wait_calls(self, count: int, after: float = 0.0, timeout: float = 20.0) -> None:
        """Wait until every client has made `count` calls that started after `after`."""
        wait_for(lambda: all(len(self.calls(c, after)) >= count for c in self.clients), timeout)


def wait_for(condition: Callable[[], object], timeout: float = 10.0) -> float:
    """Wait until `condition()` is true; the time it became so (monotonic)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)
    return time.monotonic()
