"""Finding out, before gRPC tries, whether a port can be listened on.

gRPC's C core logs an error line of its own (`E1201 ... add_port.cc:83] ...`) on stderr before it
fails to bind, so a port in use is caught here first, with one clean message.
"""

from __future__ import annotations

import errno
import socket


class ServeError(Exception):
    """The server cannot start (port in use, bad address, unusable TLS); the message says which."""


def address(host: str, port: int) -> str:
    """`host:port`, with an IPv6 host in brackets."""
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


def probe(host: str, port: int) -> int:
    """Bind `host:port` once with a plain socket and let go; the port (port 0: a free one).

    Raises:
        ServeError: the address is not usable here, or something listens on the port (another
            foldserve with `--workers` included, whose SO_REUSEPORT would otherwise let a second
            server share the port silently).
    """
    where = address(host, port)
    try:
        found = socket.getaddrinfo(
            host.strip("[]"), port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as exc:
        raise ServeError(
            f"cannot listen on {where}: not a usable address ({exc.strerror})"
        ) from None
    family, kind, proto, _, sockaddr = found[0]
    with socket.socket(family, kind, proto) as sock:
        # As gRPC's listener does: a port whose last connection lingers in TIME_WAIT is free.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(sockaddr)
        except OSError as exc:
            reason = "port in use" if exc.errno == errno.EADDRINUSE else exc.strerror
            raise ServeError(f"cannot listen on {where}: {reason}") from None
        return sock.getsockname()[1]
