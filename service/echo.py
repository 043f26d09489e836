"""Bare gRPC servers answering `foldserve.v1.Predictor/Predict`: the baselines of `foldserve bench`.

- `--mode sync|aio`: a canned reply, no model: what one Python gRPC call costs here with the same
  messages (request decoded, response encoded), in the sync thread-pool or the asyncio model.
- `--mode sync --model FILE`: the least a server can do with a model: decode the features, one
  onnxruntime run (same session options as foldserve), encode the reply; no validation, metrics,
  admission or logging. foldserve's distance from it is what our own serving code costs.

Run `python -m service.echo --mode sync|aio [--model FILE]`; it prints `port=N` and serves until
killed.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from concurrent import futures

import grpc
import numpy as np

from service._proto.foldserve.v1 import predictor_pb2 as pb

METHOD = "/foldserve.v1.Predictor/Predict"
REPLY = pb.PredictResponse(
    label=3, class_name="3", probabilities=[0.1] * 10, model_name="echo", model_version="0"
)


def _handler(behaviour) -> grpc.GenericRpcHandler:
    handler = grpc.unary_unary_rpc_method_handler(
        behaviour,
        request_deserializer=pb.PredictRequest.FromString,
        response_serializer=pb.PredictResponse.SerializeToString,
    )
    return grpc.method_handlers_generic_handler("foldserve.v1.Predictor", {"Predict": handler})


def _sync_echo(request: pb.PredictRequest, context: grpc.ServicerContext) -> pb.PredictResponse:
    return REPLY


def _bare_model_handler(model_path: str):
    from service.model import load_model

    model = load_model(model_path)

    def predict(request: pb.PredictRequest, context: grpc.ServicerContext) -> pb.PredictResponse:
        batch = np.asarray(request.features, dtype=np.float32).reshape(model.batch_shape)
        logits, probabilities = model.run(batch)
        label = int(logits[0].argmax())
        return pb.PredictResponse(
            label=label,
            class_name=model.class_labels[label],
            probabilities=probabilities[0].tolist(),
        )

    return predict


async def _aio_echo(request: pb.PredictRequest, context) -> pb.PredictResponse:
    return REPLY


def serve_sync(host: str, model_path: str | None = None) -> None:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    behaviour = _bare_model_handler(model_path) if model_path else _sync_echo
    server.add_generic_rpc_handlers((_handler(behaviour),))
    port = server.add_insecure_port(f"{host}:0")
    server.start()
    print(f"port={port}", flush=True)
    server.wait_for_termination()


async def serve_aio(host: str) -> None:
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((_handler(_aio_echo),))
    port = server.add_insecure_port(f"{host}:0")
    await server.start()
    print(f"port={port}", flush=True)
    await server.wait_for_termination()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mode", choices=("sync", "aio"), default="sync")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--model", help="run this model.onnx per call (sync mode only)")
    args = parser.parse_args(argv)
    if args.model and args.mode != "sync":
        parser.error("--model works with --mode sync only")
    if args.mode == "sync":
        serve_sync(args.host, args.model)
    else:
        asyncio.run(serve_aio(args.host))
    return 0


if __name__ == "__main__":
    sys.exit(main())
