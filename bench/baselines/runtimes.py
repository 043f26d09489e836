"""The runtimes a baseline server runs on (`--runtime`), named in one place: light enough for
`foldserve bench`'s parser to import (no grpc)."""

SYNC, AIO, UVLOOP = "sync", "aio", "uvloop"
RUNTIMES = (SYNC, AIO, UVLOOP)
DESCRIPTIONS = {
    SYNC: "grpc.server on a thread pool",
    AIO: "grpc.aio on asyncio's event loop",
    UVLOOP: "grpc.aio on uvloop's event loop",
}
