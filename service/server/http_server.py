"""The HTTP server: the V2 REST adapter (`api.rest`) on uvicorn, on the serving event loop beside
gRPC, with the same TLS and mutual TLS (a context that follows new certificate files).

uvicorn serves a socket bound here (with SO_REUSEPORT under `--workers`, like the gRPC port), so
the port is known before it starts and every worker can share it. Its own signal handling stays
off (it runs outside the main thread): the process's drain stops it (`stop_http`).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from dataclasses import dataclass

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from foldserve.api.rest_app import rest_app
from foldserve.core.dataplane import DataPlane
from foldserve.server.config import ServeConfig
from foldserve.server.ports import ServeError, address, probe

log = logging.getLogger(__name__)
START_SECONDS = 10.0


@dataclass
class HttpServer:
    """A running uvicorn server, its serving task and its port."""

    server: uvicorn.Server
    task: asyncio.Task
    port: int


def bind(host: str, port: int, shared: bool) -> socket.socket:
    """A listening socket on `host:port` (0: a free port); `shared`: SO_REUSEPORT, beside the
    other workers of `--workers N` (the supervisor has probed the port and holds it).

    Raises:
        ServeError: the port is in use or the address is invalid.
    """
    if port and not shared:
        probe(host, port)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if shared:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host.strip("[]"), port))
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise ServeError(f"cannot listen on {address(host, port)}: {exc.strerror}") from None
    sock.setblocking(False)
    return sock


# Requests one connection may have waiting behind the one being answered (HTTP/1.1 pipelining).
# uvicorn queues every pipelined request it parses and reads on after each answer, so a client
# that pipelines without reading grew a worker by ~300 MB in 3 s; over this, it gets a 400 and
# the connection is closed.
PIPELINED_REQUESTS = 32


class _CappedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with two bounds: a connection over `max_connections` is
    closed as it is accepted (uvicorn's own `limit_concurrency` keeps it open and answers each
    request 503), and one pipelining more than PIPELINED_REQUESTS requests is closed."""

    max_connections = 0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        if len(self.connections) >= self.max_connections:
            self.refused = True
            transport.abort()
            return
        self.refused = False
        super().connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.refused:
            super().connection_lost(exc)

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        if len(self.pipeline) > PIPELINED_REQUESTS:
            self.pipeline.clear()
            # httptools stops parsing and uvicorn answers 400 and closes the connection.
            raise RuntimeError(f"more than {PIPELINED_REQUESTS} pipelined requests")


def capped_protocol(max_connections: int) -> type[HttpToolsProtocol]:
    """The HTTP protocol class holding at most `max_connections` connections per server."""
    return type("CappedProtocol", (_CappedProtocol,), {"max_connections": max_connections})


async def start_http(
    config: ServeConfig,
    plane: DataPlane,
    shared: bool = False,
    tls: ssl.SSLContext | None = None,
) -> HttpServer:
    """Serve V2 REST on `config.http_port` (on the running loop) until `stop_http`; with `tls`,
    over TLS with that context (`Credentials.http_context`, which follows the files).

    Raises:
        ServeError: the port cannot be bound, or uvicorn did not start.
    """
    sock = bind(config.host, config.http_port, shared)
    settings = uvicorn.Config(
        rest_app(plane),
        http=capped_protocol(config.max_connections),
        lifespan="off",
        access_log=False,
        log_config=None,
        timeout_graceful_shutdown=max(config.grace_seconds, 1.0),
        **({} if tls is None else {"ssl_context_factory": lambda _config, _default: tls}),
    )
    server = uvicorn.Server(settings)
    task = asyncio.get_running_loop().create_task(server.serve(sockets=[sock]))
    for _ in range(int(START_SECONDS / 0.01)):
        if server.started or task.done():
            break
        await asyncio.sleep(0.01)
    if not server.started:
        task.cancel()
        raise ServeError(
            f"the HTTP server did not start on {address(config.host, sock.getsockname()[1])}"
        )
    return HttpServer(server, task, sock.getsockname()[1])


async def stop_http(http: HttpServer) -> None:
    """Stop taking connections, let the requests in flight finish, and end the server."""
    http.server.should_exit = True
    try:
        await http.task
    except Exception:  # uvicorn's own failures at shutdown must not stop the rest of the drain
        log.exception("the HTTP server failed while stopping")
