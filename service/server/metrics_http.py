"""The `/metrics` HTTP endpoint (prometheus_client's server, in a daemon thread)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, start_http_server


def serve_metrics(registry: CollectorRegistry, host: str, port: int) -> tuple[object, int]:
    """Serve `/metrics` over HTTP in a daemon thread.

    Returns:
        (server, port): the HTTP server (call `shutdown()` to stop) and the bound port.

    Raises:
        OSError: the port cannot be bound (e.g. in use).
    """
    server, _thread = start_http_server(port, addr=host, registry=registry)
    return server, int(server.server_port)
