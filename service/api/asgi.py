"""The ASGI plumbing of the REST adapter (`api/rest.py`): reading a request body within the size
limit, sending a reply, the lifespan protocol, the caller's address. Nothing here knows V2."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

JSON = b"application/json"
BINARY = b"application/octet-stream"


@dataclass(frozen=True)
class Reply:
    """An HTTP answer: status, body, content type, and any further headers (lower-case names)."""

    body: bytes
    status: int = 200
    content_type: bytes = JSON
    headers: tuple[tuple[bytes, bytes], ...] = ()


@dataclass(frozen=True)
class Body:
    """A request body as read: its bytes, and its size (over the limit: declared or seen so far,
    with the bytes left unread)."""

    data: bytes
    size: int


def declared_size(scope: Scope) -> int | None:
    """The request's `Content-Length`, None when it has none (chunked)."""
    for key, value in scope["headers"]:
        if key == b"content-length":
            return int(value) if value.isdigit() else None
    return None


async def read_body(scope: Scope, receive: Receive, limit: int) -> Body | None:
    """The request body, None when the client disconnected first. A body declared or found to be
    over `limit` bytes is not read on: its size is all its answer needs."""
    declared = declared_size(scope)
    if declared is not None and declared > limit:
        return Body(b"", declared)
    chunks, size, more = [], 0, True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return Body(b"", size)
        chunks.append(chunk)
        more = message.get("more_body", False)
    return Body(chunks[0] if len(chunks) == 1 else b"".join(chunks), size)


async def send_reply(send: Send, reply: Reply) -> None:
    headers = [
        (b"content-type", reply.content_type),
        (b"content-length", b"%d" % len(reply.body)),
        *reply.headers,
    ]
    await send({"type": "http.response.start", "status": reply.status, "headers": headers})
    await send({"type": "http.response.body", "body": reply.body})


async def lifespan(receive: Receive, send: Send) -> None:
    """Answer the server's startup and shutdown: the app has nothing of its own to start."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def peer(scope: Scope) -> str:
    """The caller's address, written as gRPC writes a peer ("ipv4:127.0.0.1:5000")."""
    client = scope.get("client")
    if not client:
        return "unknown"
    host, port = client[0], client[1]
    return f"ipv6:[{host}]:{port}" if ":" in host else f"ipv4:{host}:{port}"
