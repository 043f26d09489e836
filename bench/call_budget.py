"""Where a Predict and a ModelInfer call's server CPU goes, stage by stage, without gRPC.

    .venv/bin/python bench/call_budget.py --model models/default/model.onnx

Each stage of foldserve's request path runs on its own in a tight loop, in interleaved blocks
(so load from elsewhere hits every stage alike), timed with `time.thread_time` (CPU of the
thread doing the work, not wall time): parsing the request bytes strictly, resolving the version
and validating, decoding the features, the onnxruntime run (with the monitor's taps when it is
on), the metrics a call records, the shift monitor's update, encoding the reply, and the whole
handler (the gRPC wrapper, the adapter and the data plane, on a stand-in for grpc's
context). It prints the median of
`--blocks` blocks of `--calls` calls, with the min–max. What gRPC itself costs per call (the
floor: HTTP/2, the thread pool, grpc's own protobuf decode of nothing) is not here: the echo
floor's server CPU per call in `foldserve bench` is that. In a server every stage costs more than
here (the caches are cold between calls), so read the figures as proportions.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from prometheus_client import CollectorRegistry

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

from foldserve._proto.foldserve.v1 import predictor_pb2 as pb
from foldserve._proto.inference import grpc_predict_v2_pb2 as v2
from foldserve.api import inference, predictor
from foldserve.api.calls import method_names, service_handler
from foldserve.api.v2_tensors import decode_request, encode_response
from foldserve.api.wire import parser
from foldserve.contract import LOGITS
from foldserve.core import validate
from foldserve.core.call import Call
from foldserve.core.call_cycle import CallPolicy
from foldserve.core.dataplane import DataPlane, ServerInfo
from foldserve.core.gate import Gate
from foldserve.core.metrics import Metrics
from foldserve.core.repository import Repository
from foldserve.core.repository_settings import RepositorySettings
from foldserve.core.types import InferInput, InferRequest

SERVICES = (predictor.SERVICE, inference.SERVICE)


class Context:
    """The few things the gRPC handlers ask of grpc's servicer context."""

    def time_remaining(self) -> None:
        return None

    def invocation_metadata(self) -> tuple:
        return ()

    def peer(self) -> str:
        return "ipv4:127.0.0.1:1"

    def abort(self, code, message) -> None:
        raise RuntimeError(f"{code}: {message}")


def _per_call_us(work: Callable[[], object], calls: int) -> float:
    start = time.thread_time()
    for _ in range(calls):
        work()
    return (time.thread_time() - start) / calls * 1e6


def _requests(repository: Repository) -> tuple[bytes, bytes]:
    model = repository.model().latest.model
    classifier = model.require_classifier()
    rng = np.random.default_rng(0)
    values = (rng.random(classifier.example_size) * 16).astype(np.float32)
    predict = pb.PredictRequest(features=values.tolist(), request_id="r-1").SerializeToString()
    infer = v2.ModelInferRequest(model_name=model.name, id="r-1")
    tensor = infer.inputs.add(name=classifier.input.name, datatype="FP32")
    tensor.shape.extend([1, *classifier.example_shape])
    tensor.contents.fp32_contents.extend(values.tolist())
    return predict, infer.SerializeToString()


def stages(plane: DataPlane) -> dict[str, Callable[[], object]]:
    """Every stage, ready to run once per call of its loop."""
    served = plane.repository.model().latest
    model, runner = served.model, served.runner
    name = model.require_classifier().input.name
    predict_bytes, infer_bytes = _requests(plane.repository)
    parse_infer = parser(v2.ModelInferRequest)
    request = predictor.parse_predict(predict_bytes)
    infer_message = parse_infer(infer_bytes)
    infer_request = decode_request(infer_message)
    classify = InferRequest("", "", (InferInput("", request.features, "FP32", "features"),),
                            classify=True)  # fmt: skip
    feeds = validate.feeds(model, classify)
    names = validate.output_names(model, classify)
    tapped = runner.monitor is not None
    outputs = model.run_classifier(feeds[name], taps=tapped)
    labels = outputs[LOGITS].argmax(axis=1)
    handlers = _handlers(plane)
    predict = handlers["/foldserve.v1.Predictor/Predict"].unary_unary
    infer = handlers["/inference.GRPCInferenceService/ModelInfer"].unary_unary
    context = Context()
    call = Call("ModelInfer", "grpc", 0.0)
    answer = plane.infer(call, infer_request)
    plane.finish(call, None)

    found: dict[str, Callable[[], object]] = {
        "Predict: parse (strict) and features": lambda: predictor.parse_predict(predict_bytes),
        "ModelInfer: parse (strict)": lambda: parse_infer(infer_bytes),
        "ModelInfer: decode inputs": lambda: decode_request(infer_message),
        "validate a Predict example": lambda: validate.feeds(model, classify),
        "validate ModelInfer inputs": lambda: validate.feeds(model, infer_request),
        "resolve version": lambda: plane.repository.resolve("", "", ("n", "v")),
        "admission (gate)": lambda: (plane.gate.enter(), plane.gate.leave()),
        "onnxruntime run" + (" (taps)" if tapped else ""): lambda: model.run_classifier(
            feeds[name], taps=tapped
        ),
        "metrics of a call": _metrics_stage(runner, labels),
        "ModelInfer: encode reply (raw)": lambda: encode_response(answer),
        "runner.run (model, metrics, monitor)": lambda: runner.run(feeds, names, None),
        "Predict handler, whole": _serialized(_inline(predict, predict_bytes, context)),
        "ModelInfer handler, whole": _serialized(_inline(infer, infer_bytes, context)),
    }
    bound = getattr(runner, "_bound", None)  # the per-thread IO binding, where it exists
    if bound is not None:
        found["onnxruntime run, IO binding"] = lambda: bound.run(feeds[name])
    if tapped:
        parts = model.shift.parts(feeds[name], outputs)
        found["shift monitor observe"] = lambda: runner.monitor.observe(parts, labels)
    return found


def _serialized(call: Callable[[], object]) -> Callable[[], bytes]:
    return lambda: call().SerializeToString()  # type: ignore[attr-defined]


def _metrics_stage(runner, labels) -> Callable[[], None]:
    """What a call does to the metrics: in flight, decode and compute times, counts."""
    metrics = runner.metrics
    method = metrics.method("Predict")

    def metrics_per_call() -> None:
        metrics.in_flight.inc()
        metrics.decode.observe(1e-4)
        metrics.compute.observe(1e-4)
        metrics.count_predictions(labels)
        metrics.in_flight.dec()
        method.record("OK", 2e-4)

    return metrics_per_call


def _handlers(plane: DataPlane) -> dict:
    """The gRPC method handlers of both APIs, by full method name."""
    adapters = (predictor.PredictorAdapter(plane), inference.InferenceAdapter(plane))
    found = {}
    for service, adapter in zip(SERVICES, adapters, strict=True):
        found.update(service_handler(service, adapter, plane).handlers)
    return found


def _inline(handler: Callable, data: bytes, context: Context) -> Callable[[], object]:
    """A call of an asyncio handler that never waits (a unary call here runs inline): driven
    by hand, without an event loop's cost per call."""

    def call() -> object:
        try:
            handler(data, context).send(None)
        except StopIteration as done:
            return done.value
        raise RuntimeError("the handler waited: it cannot be timed inline")

    return call


def main(argv: list[str] | None = None) -> int:
    args = _arguments().parse_args(argv)
    metrics = Metrics(CollectorRegistry(), methods=method_names(SERVICES))
    settings = RepositorySettings(keep=1)
    repository = Repository(metrics, settings, model=(Path(args.model), "foldserve"))
    repository.start()
    plane = DataPlane(repository, Gate(64), CallPolicy(4 << 20), ServerInfo("foldserve", "0"))
    work = stages(plane)
    for run in work.values():
        _per_call_us(run, 500)  # warm up
    times: dict[str, list[float]] = {name: [] for name in work}
    for _ in range(args.blocks):
        for name, run in work.items():
            times[name].append(_per_call_us(run, args.calls))
    width = max(map(len, times))
    print(f"CPU µs per call, median (min–max) of {args.blocks} blocks of {args.calls} calls")
    for name, values in times.items():
        spread = f"({min(values):.1f}–{max(values):.1f})"
        print(f"{name:<{width}}  {statistics.median(values):7.1f}  {spread}")
    return 0


def _arguments() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="models/default/model.onnx")
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--blocks", type=int, default=5)
    return parser


if __name__ == "__main__":
    raise SystemExit(main())
