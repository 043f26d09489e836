"""A minimal asyncio HTTP/1.1 client for load tools: one keep-alive connection, one request at a
time, bodies sized by Content-Length (what foldserve's V2 REST answers carry). No TLS, no
chunked replies: the tools measure the server, and this client's cost per call stays small."""

from __future__ import annotations

import asyncio
import contextlib

# The status a V2 REST answer maps to, by gRPC's names (so tools count both protocols alike).
CODES = {200: "OK", 400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 404: "NOT_FOUND",
         413: "RESOURCE_EXHAUSTED", 429: "RESOURCE_EXHAUSTED", 500: "INTERNAL",
         501: "UNIMPLEMENTED", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}  # fmt: skip


class HttpConnection:
    """One connection to `host:port`, opened on first use and again after the server closed it."""

    def __init__(self, host: str, port: int) -> None:
        self._host, self._port = host, port
        self._streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def request(
        self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> tuple[int, bytes]:
        """(status, body) of one request.

        Raises:
            ConnectionError: the connection failed or closed before the answer was complete.
        """
        if self._streams is None:
            self._streams = await asyncio.open_connection(self._host, self._port)
        reader, writer = self._streams
        lines = [f"{method} {path} HTTP/1.1", f"host: {self._host}:{self._port}"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        lines.append(f"content-length: {len(body)}")
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        try:
            status, length, close = await _head(reader)
            answer = await reader.readexactly(length)
        except (asyncio.IncompleteReadError, ValueError, OSError) as exc:
            # A reset connection is closed too, so the next request opens a new one.
            await self.close()
            raise ConnectionError(f"no complete answer: {exc!r}") from None
        if close:
            await self.close()
        return status, answer

    async def close(self) -> None:
        if self._streams is not None:
            writer = self._streams[1]
            self._streams = None
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


async def _head(reader: asyncio.StreamReader) -> tuple[int, int, bool]:
    """(status, content length, whether the server closes) of an answer's head."""
    status_line = await reader.readuntil(b"\r\n")
    status = int(status_line.split(b" ", 2)[1])
    length, close = 0, False
    while (line := await reader.readuntil(b"\r\n")) != b"\r\n":
        name, _, value = line.decode("latin-1").partition(":")
        name = name.strip().lower()
        if name == "content-length":
            length = int(value)
        elif name == "connection" and value.strip().lower() == "close":
            close = True
    return status, length, close
