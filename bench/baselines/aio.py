"""The baselines' asyncio stack: a `grpc.aio` server on asyncio's own event loop (`aio`) or on
uvloop's (`uvloop`), with the echo floor's or the bare model server's answers.

Each handler calls the answers inline, on the event loop: an example is tens of µs of work, less
than handing it to a thread and back would cost, and the baseline is the least a server on this
concurrency model can do. The server takes the sync stack's concurrency limit and channel
options (`echo.OPTIONS`).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Coroutine

import grpc

from foldserve._proto.foldserve.v1 import predictor_pb2 as pb
from foldserve._proto.inference import grpc_predict_v2_pb2 as v2
from foldserve.bench.baselines.echo import (
    OPTIONS,
    PORT_LINE,
    Answers,
    RuntimeUnavailable,
    generic_handlers,
)
from foldserve.bench.baselines.runtimes import AIO, UVLOOP


def aio_handlers(answers: Answers) -> tuple[grpc.GenericRpcHandler, ...]:
    """gRPC handlers of Predict, PredictStream (one reply per message) and ModelInfer, for a
    `grpc.aio` server."""

    async def predict(request: pb.PredictRequest, context) -> pb.PredictResponse:
        return answers.predict(request)

    async def stream(
        requests: AsyncIterator[pb.PredictRequest], context
    ) -> AsyncIterator[pb.PredictStreamResponse]:
        async for request in requests:
            yield pb.PredictStreamResponse(
                request_id=request.request_id, prediction=answers.predict(request)
            )

    async def infer(request: v2.ModelInferRequest, context) -> v2.ModelInferResponse:
        return answers.infer(request)

    return generic_handlers(predict, stream, infer)


async def start_aio(host: str, answers: Answers, limit: int) -> tuple[grpc.aio.Server, int]:
    """Start a `grpc.aio` baseline server on `host`, a free port, on the running loop; return it
    and the port."""
    server = grpc.aio.server(maximum_concurrent_rpcs=limit, options=OPTIONS)
    server.add_generic_rpc_handlers(aio_handlers(answers))
    port = server.add_insecure_port(f"{host}:0")
    await server.start()
    return server, port


async def _serve(host: str, answers: Answers, limit: int) -> None:
    server, port = await start_aio(host, answers, limit)
    print(PORT_LINE.format(port=port), flush=True)
    await server.wait_for_termination()


def loop_runner(runtime: str) -> Callable[[Coroutine], object]:
    """What runs a coroutine to its end on `runtime`'s event loop.

    Raises:
        RuntimeUnavailable: uvloop asked for and not installed.
        ValueError: not an asyncio runtime.
    """
    if runtime == AIO:
        return asyncio.run
    if runtime != UVLOOP:
        raise ValueError(f"{runtime!r} is not an asyncio runtime ({AIO}, {UVLOOP})")
    try:
        import uvloop
    except ImportError:
        raise RuntimeUnavailable("the uvloop runtime needs uvloop (pip install uvloop)") from None
    return uvloop.run


def serve_aio(host: str, answers: Answers, limit: int, runtime: str) -> None:
    """Serve `answers` on a `grpc.aio` server on `runtime`'s loop until killed, after printing
    the `grpc_port=N` line."""
    loop_runner(runtime)(_serve(host, answers, limit))
