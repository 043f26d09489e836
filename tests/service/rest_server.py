"""An in-process V2 REST server for the tests: `foldserve serve`'s own server (`start_server`: gRPC
and HTTP on one event loop) on 127.0.0.1 and free ports, with its HTTP side at hand."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import CollectorRegistry

from foldserve.core.dataplane import DataPlane
from foldserve.core.gate import Gate
from foldserve.server.app import RunningServer, start_server
from foldserve.server.config import MAX_MESSAGE_BYTES, ServeConfig

# What stands for no bound on calls in flight.
UNBOUNDED = 1 << 30


@dataclass
class RestServer:
    """A running server: its data plane, registry and HTTP base URL; `stop` ends it."""

    running: RunningServer
    registry: CollectorRegistry

    @property
    def plane(self) -> DataPlane:
        return self.running.plane

    @property
    def port(self) -> int:
        return self.running.http_port

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
        self.running.drain(0)


def _lower(headers) -> dict[str, str]:
    return {key.lower(): value for key, value in headers.items()}


def start_rest(
    model: Path | str,
    *,
    token: str | None = None,
    max_message_bytes: int = MAX_MESSAGE_BYTES,
    max_in_flight: int | None = None,
) -> RestServer:
    """Serve `model` (a file or repository directory); stop it with `stop()`."""
    registry = CollectorRegistry()
    config = ServeConfig(
        model=str(model), host="127.0.0.1", port=0, http_port=0, metrics_port=0,
        max_message_bytes=max_message_bytes, max_concurrent_rpcs=max_in_flight or UNBOUNDED,
        auth_token=token,
    )  # fmt: skip
    return RestServer(start_server(config, registry, serve_metrics_http=False), registry)
