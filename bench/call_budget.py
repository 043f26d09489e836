"""Where a Predict and a ModelInfer call's server CPU goes, stage by stage, without gRPC.

    .venv/bin/python bench/call_budget.py --model models/default/model.onnx

Each stage of foldserve's request path runs on its own in a tight loop, in interleaved blocks
(so load from elsewhere hits every stage alike), timed with `time.thread_time` (CPU of the
thread doing the work, not wall time): parsing the request bytes strictly, resolving the version
and validating, decoding the features, the onnxruntime run (with the monitor's taps when it is
on), the metrics a call records, the shift monitor's update, encoding the reply, and the whole
handler (`Calls` wrapper and adapter, on a stand-in for grpc's context). It prints the median of
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

import numpy as np
from prometheus_client import CollectorRegistry

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

from service._proto.foldserve.v1 import predictor_pb2 as pb
from service._proto.inference import grpc_predict_v2_pb2 as v2
from service.api import inference, predictor
from service.api.calls import CallPolicy, Calls, method_names, service_handler
from service.api.tensors import decode_infer_inputs, encode_infer_outputs, features_to_batch
from service.api.wire import parser
from service.contract import LOGITS, PROBABILITIES, TAPS
from service.core.call import Call
from service.core.gate import Gate
from service.core.repository import ModelRepository
from service.metrics import Metrics

SERVICES = (predictor.SERVICE, inference.SERVICE)


class Context:
    """The few things `Calls` asks of grpc's servicer context."""

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


def _requests(repository: ModelRepository) -> tuple[bytes, bytes]:
    model = repository.latest.model
    rng = np.random.default_rng(0)
    values = (rng.random(model.input.size) * 16).astype(np.float32)
    predict = pb.PredictRequest(features=values.tolist(), request_id="r-1").SerializeToString()
    infer = v2.ModelInferRequest(model_name=model.name, id="r-1")
    tensor = infer.inputs.add(name=model.input.name, datatype="FP32")
    tensor.shape.extend([1, *model.input.shape])
    tensor.contents.fp32_contents.extend(values.tolist())
    return predict, infer.SerializeToString()


def stages(repository: ModelRepository, calls: Calls) -> dict[str, Callable[[], object]]:
    """Every stage, ready to run once per call of its loop."""
    served = repository.latest
    model, runner = served.model, served.runner
    predict_bytes, infer_bytes = _requests(repository)
    parse_predict, parse_infer = parser(pb.PredictRequest), parser(v2.ModelInferRequest)
    request, infer_request = parse_predict(predict_bytes), parse_infer(infer_bytes)
    batch = features_to_batch(request.features, model)
    tapped = runner.monitor is not None
    outputs = model.run(batch, taps=tapped)
    labels = outputs[LOGITS].argmax(axis=1)
    handlers = {
        name: handler
        for h in (service_handler(s, a, calls) for s, a in _adapters(repository))
        for name, handler in h._handlers.items()
    }
    predict = handlers["/foldserve.v1.Predictor/Predict"].unary_unary
    infer = handlers["/inference.GRPCInferenceService/ModelInfer"].unary_unary
    context = Context()

    metrics_per_call = _metrics_stage(runner, labels)
    encode, encode_infer = _encoders(model, outputs, request)

    found: dict[str, Callable[[], object]] = {
        "Predict: parse (strict)": lambda: parse_predict(predict_bytes),
        "Predict: decode features": _decode_features(request, predict_bytes, model),
        "ModelInfer: parse (strict)": lambda: parse_infer(infer_bytes),
        "ModelInfer: decode inputs": lambda: decode_infer_inputs(infer_request, model),
        "resolve version": lambda: repository.resolve(Call(0.0, None), "", "", "n", "v"),
        "admission (gate)": lambda: (calls._gate.enter(), calls._gate.leave()),
        "onnxruntime run" + (" (taps)" if tapped else ""): lambda: model.run(batch, taps=tapped),
        "metrics of a call": metrics_per_call,
        "Predict: encode reply": encode,
        "ModelInfer: encode reply (typed)": encode_infer,
        "runner.run (model, metrics, monitor)": lambda: runner.run(batch, Call(0.0, None)),
        "Predict handler, whole": lambda: pb.PredictResponse.SerializeToString(
            predict(predict_bytes, context)
        ),
        "ModelInfer handler, whole": lambda: v2.ModelInferResponse.SerializeToString(
            infer(infer_bytes, context)
        ),
    }
    bound = getattr(runner, "_bound", None)  # the per-thread IO binding, where it exists
    if bound is not None:
        found["onnxruntime run, IO binding"] = lambda: bound.run(batch)
    if tapped:
        found["shift monitor observe"] = lambda: runner.monitor.observe(outputs[TAPS], labels)
    return found


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


def _encoders(model, outputs, request) -> tuple[Callable[[], bytes], Callable[[], bytes]]:
    """Encoding a Predict and a typed ModelInfer reply."""

    def encode() -> bytes:
        label = int(outputs[LOGITS][0].argmax())
        return pb.PredictResponse(
            label=label,
            class_name=model.class_labels[label],
            probabilities=outputs[PROBABILITIES][0].tolist(),
            model_name=model.name,
            model_version=model.version,
            request_id=request.request_id,
        ).SerializeToString()

    def encode_infer() -> bytes:
        response = v2.ModelInferResponse(model_name=model.name, model_version=model.version)
        encode_infer_outputs(response, outputs, list(model.output_names), False)
        return response.SerializeToString()

    return encode, encode_infer


def _decode_features(request, data: bytes, model) -> Callable[[], object]:
    fast = getattr(predictor, "features_batch", None)  # the packed-record path, where it exists
    if fast is None:
        return lambda: features_to_batch(request.features, model)
    return lambda: fast(request, data, model)


def _adapters(repository: ModelRepository):
    return zip(
        SERVICES,
        (predictor.PredictorAdapter(repository), inference.InferenceAdapter(repository)),
        strict=True,
    )


def main(argv: list[str] | None = None) -> int:
    args = _arguments().parse_args(argv)
    metrics = Metrics(CollectorRegistry(), "foldserve", methods=method_names(SERVICES))
    repository = ModelRepository(args.model, "foldserve", metrics, 1)
    repository.start()
    calls = Calls(repository, Gate(64), CallPolicy(4 << 20))
    work = stages(repository, calls)
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
