"""A stand-in for a foldserve replica's HTTP/REST port, as the balancer sees it, for the tests of
deploy/balancer/haproxy.cfg's HTTP side (test_balancer_http.py).

It answers as the Open Inference Protocol and foldserve's status mapping say: `GET
/v2/health/ready` 200 when ready, 503 while draining; `POST /v2/models/{name}/infer` 200, or 503
(UNAVAILABLE) for a call the replica does not run; and, dead, an empty answer or a refused
connection. Flip its fields to change what it answers.
"""

from __future__ import annotations

import http.client
import json
import ssl
import threading
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MODEL = "foldserve"
INFER = f"/v2/models/{MODEL}/infer"
BODY = json.dumps(
    {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [0.5] * 4}]}
).encode()


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # HAProxy's health checks hang up once they have the status line: expected


@dataclass
class Replica:
    """A stand-in for one replica's HTTP/REST port; flip its fields to change what it answers."""

    name: str
    context: ssl.SSLContext | None = None
    ready: bool = True  # GET /v2/health/ready: 200, or 503 (draining)
    refuse: bool = False  # POST .../infer: 503 UNAVAILABLE, a call it does not run
    dead: bool = False  # closes every connection without a word, and listens no more
    counts: Counter[str] = field(default_factory=Counter)  # "infer 200", "ready 503", ...
    tokens: list[str] = field(default_factory=list)  # the authorization headers it was sent

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self.server = _QuietServer(("127.0.0.1", 0), self._handler())
        if self.context is not None:
            self.server.socket = self.context.wrap_socket(self.server.socket, server_side=True)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server.server_address[1]}"

    def count(self, what: str) -> int:
        with self._lock:
            return self.counts[what]

    def kill(self) -> None:
        self.dead = True
        self.server.shutdown()
        self.server.server_close()

    def _answer(self, method: str, path: str, headers: dict[str, str]) -> int | None:
        if self.dead:
            return None
        with self._lock:
            if method == "GET" and path == "/v2/health/ready":
                code = 200 if self.ready else 503
            elif method == "POST" and path == INFER:
                code = 503 if self.refuse else 200
                self.tokens.append(headers.get("authorization", ""))
            else:
                code = 404
            self.counts[f"{'ready' if method == 'GET' else 'infer'} {code}"] += 1
        return code

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        replica = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as HAProxy's connections to replicas

            def _serve(self, method: str) -> None:
                self.rfile.read(int(self.headers.get("content-length") or 0))
                headers = {k.lower(): v for k, v in self.headers.items()}
                code = replica._answer(method, self.path, headers)
                if code is None:  # a replica that died mid-call: the connection just closes
                    self.close_connection = True
                    return
                body = json.dumps({"model_name": MODEL, "replica": replica.name}).encode()
                if code != 200:
                    body = json.dumps({"error": f"{replica.name}: unavailable"}).encode()
                self.send_response(code)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                self._serve("GET")

            def do_POST(self) -> None:
                self._serve("POST")

            def log_message(self, *args: object) -> None:
                pass

        return Handler


def infer(connection: http.client.HTTPConnection, token: str = "") -> tuple[int, str]:
    """One POST .../infer on `connection` (kept open): the status and the replica that answered."""
    headers = {"content-type": "application/json"}
    if token:
        headers["authorization"] = f"Bearer {token}"
    connection.request("POST", INFER, body=BODY, headers=headers)
    response = connection.getresponse()
    answer = json.loads(response.read() or b"{}")
    return response.status, answer.get("replica", "")
