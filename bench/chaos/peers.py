"""Hostile and broken peers, each run in a process of its own (so its work does not slow the
load generator's event loop), for `seconds`, against one port:

- `idle`: many connections that send nothing after opening (gRPC: the HTTP/2 preface and
  SETTINGS; HTTP: nothing at all) and stay open;
- `slow`: connections that send a valid call one byte at a time (a slowloris);
- `reset`: HTTP/2 rapid reset (CVE-2023-44487), streams opened and cancelled at once in a loop;
  on the HTTP port (HTTP/1.1 only) its twin, a request sent and the connection dropped at once;
- `flood`: PING and SETTINGS frames in a loop, their ACKs never read; on the HTTP port, requests
  pipelined without reading the answers.

    python -m foldserve.bench.chaos.peers FAULT PROTOCOL PORT SECONDS [COUNT]

prints one JSON object: what was sent and how the server answered.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time

from foldserve.bench.chaos import h2frames

INFER = "/inference.GRPCInferenceService/ModelInfer"
HTTP_INFER = (
    b"POST /v2/models/foldserve/infer HTTP/1.1\r\nhost: chaos\r\ncontent-type: application/json\r\n"
    b"content-length: 2\r\n\r\n{}"
)
HEALTH = b"GET /v2/health/live HTTP/1.1\r\nhost: chaos\r\n\r\n"
OPEN_AT_ONCE = 256


async def _connect(port: int, hello: bytes) -> asyncio.StreamWriter | None:
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return None
    writer.write(hello)
    # Read (and drop) what the server sends, so its close is seen: `writer.is_closing()`.
    writer.reader_task = asyncio.get_running_loop().create_task(_drain(reader, writer))
    return writer


async def _drain(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while await reader.read(65536):
            pass
    except OSError:
        pass
    writer.close()


async def idle(protocol: str, port: int, seconds: float, count: int) -> dict:
    hello = h2frames.opening() if protocol == "grpc" else b""
    gate = asyncio.Semaphore(OPEN_AT_ONCE)

    async def one():
        async with gate:
            return await _connect(port, hello)

    started = time.monotonic()
    writers = await asyncio.gather(*(one() for _ in range(count)))
    opened = time.monotonic() - started
    await asyncio.sleep(max(seconds - opened, 0.5))
    held = [w for w in writers if w is not None and not w.is_closing()]
    for writer in writers:
        if writer is not None:
            writer.close()
    return {"opened": count, "open_seconds": round(opened, 2), "held_by_server": len(held)}


async def slow(protocol: str, port: int, seconds: float, count: int) -> dict:
    if protocol == "grpc":
        call = h2frames.frame(
            h2frames.HEADERS, h2frames.END_HEADERS, 1, h2frames.grpc_headers(INFER)
        )
        body = h2frames.opening() + call + h2frames.frame(h2frames.DATA, 1, 1, b"\0" * 5)
    else:
        body = HTTP_INFER
    deadline = time.monotonic() + seconds
    writers = [w for w in await asyncio.gather(*(_connect(port, b"") for _ in range(count))) if w]
    sent = 0
    while time.monotonic() < deadline and sent < len(body):
        for writer in writers:
            if not writer.is_closing():
                writer.write(body[sent : sent + 1])
        sent += 1
        await asyncio.sleep(seconds / len(body))
    closed = sum(w.is_closing() for w in writers)
    for writer in writers:
        writer.close()
    return {"connections": len(writers), "bytes_each": sent, "closed_by_server": closed}


async def _hammer(port: int, hello: bytes, chunk, seconds: float, connections: int) -> dict:
    """`connections` connections each writing `chunk(n)` (n: chunks so far) until `seconds`
    pass, reopening any the server closes; never reading."""
    deadline = time.monotonic() + seconds
    chunks = closed = 0

    async def one():
        nonlocal chunks, closed
        writer = await _connect(port, hello)
        while time.monotonic() < deadline:
            if writer is None or writer.is_closing():
                closed += writer is not None
                writer = await _connect(port, hello)
                await asyncio.sleep(0.01)
                continue
            writer.write(chunk(chunks))
            chunks += 1
            # A server that stopped reading: its buffers are full, ours are not to grow.
            with contextlib.suppress(OSError, TimeoutError):
                await asyncio.wait_for(writer.drain(), 0.5)
        if writer is not None:
            writer.close()

    await asyncio.gather(*(one() for _ in range(connections)))
    return {"chunks": chunks, "reopened_after_server_closed": closed}


async def reset(protocol: str, port: int, seconds: float, count: int) -> dict:
    if protocol == "grpc":
        per = 100

        def chunk(n: int) -> bytes:  # stream ids only grow; a connection carries up to 2^30
            return h2frames.rapid_reset(1 + 2 * per * (n % 5_000_000), per, INFER)

        got = await _hammer(port, h2frames.opening(), chunk, seconds, count)
        return {"streams_reset": got["chunks"] * per, **got}
    deadline, dropped = time.monotonic() + seconds, 0

    async def one():
        nonlocal dropped
        while time.monotonic() < deadline:
            writer = await _connect(port, HTTP_INFER)
            if writer is not None:
                writer.transport.abort()  # a reset, not a polite close
                dropped += 1
            await asyncio.sleep(0)

    await asyncio.gather(*(one() for _ in range(count)))
    return {"requests_then_reset": dropped}


async def flood(protocol: str, port: int, seconds: float, count: int) -> dict:
    if protocol == "grpc":
        burst = h2frames.pings(50) + h2frames.settings(50)
        got = await _hammer(port, h2frames.opening(), lambda n: burst, seconds, count)
        return {"pings_and_settings": got["chunks"] * 100, **got}
    got = await _hammer(port, b"", lambda n: HEALTH * 50, seconds, count)
    return {"pipelined_requests": got["chunks"] * 50, **got}


FAULTS = {"idle": idle, "slow": slow, "reset": reset, "flood": flood}


def main(argv: list[str]) -> int:
    fault, protocol, port, seconds = argv[0], argv[1], int(argv[2]), float(argv[3])
    count = int(argv[4]) if len(argv) > 4 else 1
    result = asyncio.run(FAULTS[fault](protocol, port, seconds, count))
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
