"""The echo floor of `foldserve bench`: canned replies on a Python gRPC server stack.

It answers `foldserve.v1.Predictor/Predict`, `/PredictStream` and
`inference.GRPCInferenceService/ModelInfer` (typed and raw contents) with replies shaped like
foldserve's (ten probabilities; two FP32 outputs of [1, 10]), on the runtime `--runtime` names:

- `sync`: a `grpc.server` on a thread pool, built with foldserve's pool size, concurrency limit
  and channel options;
- `aio`: a `grpc.aio` server on asyncio's own event loop (`bench.baselines.aio`);
- `uvloop`: the same `grpc.aio` server on uvloop's event loop.

What it costs per call is what a Python gRPC call with these messages costs here at all, under
that concurrency model: request parsed, response encoded.

`foldserve.bench.baselines.bare_server` plugs a model into the same stacks (`serve(host, answers)`).

Run `python -m foldserve.bench.baselines.echo [--runtime sync|aio|uvloop]`; it prints
`grpc_port=N` and serves until killed.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterator
from concurrent import futures
from typing import Protocol

import grpc

from foldserve._proto.foldserve.v1 import predictor_pb2 as pb
from foldserve._proto.inference import grpc_predict_v2_pb2 as v2
from foldserve.bench.baselines.runtimes import DESCRIPTIONS, RUNTIMES, SYNC
from foldserve.contract.layout import MODEL_NAME
from foldserve.server.config import MAX_CONCURRENT_RPCS, MAX_MESSAGE_BYTES

PREDICTOR = pb.DESCRIPTOR.services_by_name["Predictor"]
INFERENCE = v2.DESCRIPTOR.services_by_name["GRPCInferenceService"]
# What the suite looks for on a server's output to learn its port (foldserve logs the same).
PORT_LINE = "grpc_port={port}"
FP32 = "FP32"
CLASSES = 10
# Every runtime's server takes these channel options (foldserve's message size limits).
OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.so_reuseport", 0),
]


class RuntimeUnavailable(RuntimeError):
    """The runtime asked for cannot run here (uvloop not installed); the message says so."""


class Answers(Protocol):
    """What a baseline server does per example; the handlers around it are shared."""

    def predict(self, request: pb.PredictRequest) -> pb.PredictResponse: ...

    def infer(self, request: v2.ModelInferRequest) -> v2.ModelInferResponse: ...


def _infer_reply(raw: bool) -> v2.ModelInferResponse:
    reply = v2.ModelInferResponse(model_name=MODEL_NAME, model_version="echo")
    for name in ("logits", "probabilities"):
        output = reply.outputs.add(name=name, datatype=FP32, shape=[1, CLASSES])
        if raw:
            reply.raw_output_contents.append(bytes(4 * CLASSES))
        else:
            output.contents.fp32_contents.extend([0.1] * CLASSES)
    return reply


class Echo:
    """Canned replies: one per method, raw or typed as the request was (as foldserve answers)."""

    PREDICT = pb.PredictResponse(
        label=3,
        class_name="3",
        probabilities=[0.1] * CLASSES,
        model_name=MODEL_NAME,
        model_version="echo",
    )
    INFER_TYPED = _infer_reply(raw=False)
    INFER_RAW = _infer_reply(raw=True)

    def predict(self, request: pb.PredictRequest) -> pb.PredictResponse:
        return self.PREDICT

    def infer(self, request: v2.ModelInferRequest) -> v2.ModelInferResponse:
        return self.INFER_RAW if request.raw_input_contents else self.INFER_TYPED


def generic_handlers(predict, stream, infer) -> tuple[grpc.GenericRpcHandler, ...]:
    """The services' handlers around the functions of Predict, PredictStream and ModelInfer
    (plain functions for a `grpc.server`, coroutines and an async generator for `grpc.aio`)."""
    predictor = {
        "Predict": grpc.unary_unary_rpc_method_handler(
            predict, pb.PredictRequest.FromString, pb.PredictResponse.SerializeToString
        ),
        "PredictStream": grpc.stream_stream_rpc_method_handler(
            stream, pb.PredictRequest.FromString, pb.PredictStreamResponse.SerializeToString
        ),
    }
    inference = {
        "ModelInfer": grpc.unary_unary_rpc_method_handler(
            infer, v2.ModelInferRequest.FromString, v2.ModelInferResponse.SerializeToString
        )
    }
    return (
        grpc.method_handlers_generic_handler(PREDICTOR.full_name, predictor),
        grpc.method_handlers_generic_handler(INFERENCE.full_name, inference),
    )


def handlers(answers: Answers) -> tuple[grpc.GenericRpcHandler, ...]:
    """gRPC handlers of Predict, PredictStream (one reply per message) and ModelInfer, for a
    `grpc.server`."""

    def predict(request: pb.PredictRequest, context: grpc.ServicerContext) -> pb.PredictResponse:
        return answers.predict(request)

    def stream(
        requests: Iterator[pb.PredictRequest], context: grpc.ServicerContext
    ) -> Iterator[pb.PredictStreamResponse]:
        for request in requests:
            yield pb.PredictStreamResponse(
                request_id=request.request_id, prediction=answers.predict(request)
            )

    def infer(
        request: v2.ModelInferRequest, context: grpc.ServicerContext
    ) -> v2.ModelInferResponse:
        return answers.infer(request)

    return generic_handlers(predict, stream, infer)


def sync_server(limit: int = MAX_CONCURRENT_RPCS) -> grpc.Server:
    """A `grpc.server` built as `foldserve serve --max-concurrent-rpcs LIMIT` builds its own.

    Mirrors `foldserve.server.app` (which tools may not import): a thread pool of `limit + 4`
    workers, `limit` calls at once, the same message size options.
    """
    return grpc.server(
        futures.ThreadPoolExecutor(max_workers=limit + 4, thread_name_prefix="baseline-rpc"),
        maximum_concurrent_rpcs=limit,
        options=OPTIONS,
    )


def start(host: str, answers: Answers, limit: int = MAX_CONCURRENT_RPCS) -> tuple[grpc.Server, int]:
    """Start a baseline server on `host`, a free port, serving `limit` calls at once; return it
    and the port."""
    server = sync_server(limit)
    server.add_generic_rpc_handlers(handlers(answers))
    port = server.add_insecure_port(f"{host}:0")
    server.start()
    return server, port


def serve(
    host: str, answers: Answers, limit: int = MAX_CONCURRENT_RPCS, runtime: str = SYNC
) -> None:
    """Serve `answers` on `runtime` until killed, after printing the `grpc_port=N` line.

    Raises:
        RuntimeUnavailable: `runtime` is uvloop, and uvloop is not installed.
    """
    if runtime != SYNC:
        from foldserve.bench.baselines.aio import serve_aio

        serve_aio(host, answers, limit, runtime)
        return
    server, port = start(host, answers, limit)
    print(PORT_LINE.format(port=port), flush=True)
    server.wait_for_termination()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags every baseline server takes: where to listen, how many calls at once, on which
    runtime."""
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument(
        "--max-concurrent-rpcs",
        type=int,
        default=MAX_CONCURRENT_RPCS,
        help="calls served at once, as foldserve's flag of the same name",
    )
    parser.add_argument(
        "--runtime",
        choices=RUNTIMES,
        default=SYNC,
        help="; ".join(f"{name}: {text}" for name, text in DESCRIPTIONS.items()),
    )


def run(answers: Callable[[], Answers], argv: list[str] | None, parser) -> int:
    """Parse a baseline's flags, build its answers and serve them; exit 2 when the runtime is
    not installed."""
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        serve(args.host, answers(args), args.max_concurrent_rpcs, args.runtime)
    except RuntimeUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    return run(lambda args: Echo(), argv, argparse.ArgumentParser(description=__doc__))


if __name__ == "__main__":
    sys.exit(main())
