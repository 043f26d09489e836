"""An in-process V2 REST server for the tests: the data plane built as `server/app.py` builds it,
`rest_app` on uvicorn (httptools, uvloop) in a thread of its own, on 127.0.0.1 and a free port."""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import uvicorn
import uvloop
from prometheus_client import CollectorRegistry

from foldserve.api.rest import rest_app
from foldserve.core.access import TokenCheck
from foldserve.core.dataplane import CallPolicy, DataPlane, ServerInfo
from foldserve.core.gate import Gate
from foldserve.server.app import SERVER_NAME, open_repository
from foldserve.server.config import MAX_MESSAGE_BYTES, ServeConfig
from foldserve.version import VERSION

START_SECONDS = 20.0


@dataclass
class RestServer:
    """A running REST server: its data plane, registry and base URL; `stop` ends it."""

    plane: DataPlane
    registry: CollectorRegistry
    port: int
    _server: uvicorn.Server = field(repr=False)
    _thread: threading.Thread = field(repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def gate(self) -> Gate:
        return self.plane.gate

    def request(
        self, method: str, path: str, body: bytes | None = None, headers: dict | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        """(status, headers with lower-case names, body) of one call, errors included."""
        request = urllib.request.Request(
            self.url + path, data=body, method=method, headers=headers or {}
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as answer:
                return answer.status, _lower(answer.headers), answer.read()
        except urllib.error.HTTPError as error:
            with error:
                return error.code, _lower(error.headers), error.read()

    def json(self, method: str, path: str, value: object = None, **headers: str) -> tuple:
        """(status, parsed JSON body) of a call with a JSON body (`value`, None: no body)."""
        body = None if value is None else json.dumps(value).encode()
        status, _, answer = self.request(method, path, body, headers)
        return status, json.loads(answer)

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)


def _lower(headers) -> dict[str, str]:
    return {key.lower(): value for key, value in headers.items()}


def start_rest(
    model: Path | str,
    *,
    token: str | None = None,
    max_message_bytes: int = MAX_MESSAGE_BYTES,
    max_in_flight: int | None = None,
) -> RestServer:
    """Serve `model` (a file or repository directory) over V2 REST; stop it with `stop()`."""
    registry = CollectorRegistry()
    config = ServeConfig(model=str(model), host="127.0.0.1", port=0, metrics_port=0)
    gate = Gate(max_in_flight)
    repository = open_repository(config, registry, gate)
    policy = CallPolicy(max_message_bytes, None if token is None else TokenCheck(token))
    plane = DataPlane(repository, gate, policy, ServerInfo(SERVER_NAME, VERSION))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(
        rest_app(plane), http="httptools", log_level="warning", access_log=False, lifespan="on"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(
        target=lambda: uvloop.run(server.serve(sockets=[sock])), name="rest", daemon=True
    )
    thread.start()
    _wait_started(server)
    return RestServer(plane, registry, sock.getsockname()[1], server, thread)


def _wait_started(server: uvicorn.Server) -> None:
    stop = time.monotonic() + START_SECONDS
    while not server.started:
        if time.monotonic() > stop:
            raise RuntimeError("the REST server did not start")
        time.sleep(0.01)
