"""Echo servers answering `foldserve.v1.Predictor/Predict` with a canned reply: the floor of
`foldserve bench`, what one Python gRPC call with these messages costs here at all (request
decoded, response encoded), in the sync thread-pool and the asyncio model.

Run `python -m service.tools.echo --mode sync|aio`; it prints `port=N` and serves until killed.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable
from concurrent import futures

import grpc

from service._proto.foldserve.v1 import predictor_pb2 as pb

SERVICE = pb.DESCRIPTOR.services_by_name["Predictor"]
REPLY = pb.PredictResponse(
    label=3, class_name="3", probabilities=[0.1] * 10, model_name="echo", model_version="0"
)


def predict_handler(behaviour: Callable) -> grpc.GenericRpcHandler:
    """A generic handler serving only `Predict`, answered by `behaviour(request, context)`."""
    handler = grpc.unary_unary_rpc_method_handler(
        behaviour,
        request_deserializer=pb.PredictRequest.FromString,
        response_serializer=pb.PredictResponse.SerializeToString,
    )
    return grpc.method_handlers_generic_handler(SERVICE.full_name, {"Predict": handler})


def serve_sync(host: str, behaviour: Callable) -> None:
    """Serve `Predict` with `behaviour` on a sync thread-pool server; print the port."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    server.add_generic_rpc_handlers((predict_handler(behaviour),))
    port = server.add_insecure_port(f"{host}:0")
    server.start()
    print(f"port={port}", flush=True)
    server.wait_for_termination()


def _sync_echo(request: pb.PredictRequest, context: grpc.ServicerContext) -> pb.PredictResponse:
    return REPLY


async def _aio_echo(request: pb.PredictRequest, context) -> pb.PredictResponse:
    return REPLY


async def serve_aio(host: str) -> None:
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((predict_handler(_aio_echo),))
    port = server.add_insecure_port(f"{host}:0")
    await server.start()
    print(f"port={port}", flush=True)
    await server.wait_for_termination()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mode", choices=("sync", "aio"), default="sync")
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args(argv)
    if args.mode == "sync":
        serve_sync(args.host, _sync_echo)
    else:
        asyncio.run(serve_aio(args.host))
    return 0


if __name__ == "__main__":
    sys.exit(main())
