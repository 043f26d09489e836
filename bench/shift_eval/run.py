"""`foldserve shift-eval`: stream clean and shifted digits through a running server, one example
per call, and report when its covariate-shift monitor alarms, what fired and how accurate the
model stayed on each stream.

Every stream gets a server of its own (`foldserve serve` on 127.0.0.1, a fresh process, so a
fresh monitor state); the client side is plain gRPC: `Predict` per example and, every
`--sample-every` examples, `DescribeModel` for the live scores.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

import grpc
import numpy as np

from foldserve._proto.foldserve.v1 import predictor_pb2 as pb
from foldserve._proto.foldserve.v1 import predictor_pb2_grpc as pb_grpc
from foldserve.bench.shift_eval.report import StreamResult, print_table, save_plot
from foldserve.bench.shift_eval.streams import Stream, digits_streams
from foldserve.bench.suite.servers import started
from foldserve.core.loading import load_model
from foldserve.core.model import ModelError
from foldserve.datasets import load_dataset, split_dataset


def _ratios(shift: pb.ShiftMonitor, attribute: str) -> dict[str, float]:
    values = {
        layer.layer: getattr(layer, attribute) / layer.threshold
        for layer in shift.layers
        if layer.threshold > 0
    }
    if shift.prior.threshold > 0:
        values["prior"] = getattr(shift.prior, attribute) / shift.prior.threshold
    return values


def _serve(model: Path, check_every: int):
    """A `foldserve serve` process of `model` on a free port (a context yielding the port)."""
    command = [
        sys.executable, "-m", "foldserve.cli", "serve", "--model", str(model),
        "--host", "127.0.0.1", "--port", "0", "--http-port", "0", "--metrics-port", "0",
        "--poll-seconds", "0",
        "--shift-check-every", str(check_every), "--workers", "1",
    ]  # fmt: skip
    return started(command, "foldserve")


def run_stream(
    model: Path, stream: Stream, requests: int, seed: int, sample_every: int, check_every: int
) -> StreamResult:
    """Stream `requests` examples of `stream` through a fresh server of `model`."""
    correct = 0
    curve: list[tuple[int, float]] = []
    server = _serve(model, check_every)
    with server as running, grpc.insecure_channel(running.target) as channel:
        stub = pb_grpc.PredictorStub(channel)
        describe = pb.DescribeModelRequest()
        for count, index in enumerate(stream.requests(requests, seed), start=1):
            request = pb.PredictRequest(features=stream.features[index].tolist())
            reply = stub.Predict(request, timeout=10)
            correct += int(reply.label == stream.labels[index])
            if count % sample_every == 0 or count == requests:
                now = _ratios(stub.DescribeModel(describe, timeout=10).shift, "score")
                curve.append((count, max(now.values())))
        shift = stub.DescribeModel(describe, timeout=10).shift
    return _result(stream.name, stream, requests, correct, shift, curve)


def _result(
    name: str,
    stream: Stream,
    requests: int,
    correct: int,
    shift: pb.ShiftMonitor,
    curve: list[tuple[int, float]] | None = None,
) -> StreamResult:
    """What a stream did to the monitor (its state once the stream is sent), and the accuracy."""
    peaks = _ratios(shift, "peak")
    peak_layer = max(peaks, key=peaks.__getitem__)
    return StreamResult(
        name=name,
        clean=stream.clean,
        requests=requests,
        alarm_at=int(shift.first_alarm_example),
        fired=list(shift.first_alarm),
        peak_ratio=peaks[peak_layer],
        peak_layer=peak_layer,
        accuracy=correct / requests,
        curve=curve or [],
    )


def run_replay(model: Path, stream: Stream, requests: int, seed: int, check_every: int):
    """A long replay of `stream` over one `PredictStream` (one example per message, each its own
    model run, as `Predict` would; only the per-call overhead is saved)."""
    order = stream.requests(requests, seed)
    correct = 0
    with _serve(model, check_every) as running, grpc.insecure_channel(running.target) as channel:
        stub = pb_grpc.PredictorStub(channel)
        messages = (pb.PredictRequest(features=stream.features[i].tolist()) for i in order)
        for index, reply in zip(order, stub.PredictStream(messages, timeout=3600), strict=True):
            correct += int(reply.prediction.label == stream.labels[index])
        shift = stub.DescribeModel(pb.DescribeModelRequest(), timeout=10).shift
    return _result(f"{stream.name} replay", stream, requests, correct, shift)


def test_split(model: Path) -> tuple[np.ndarray, np.ndarray]:
    """The digits test split the model was trained with (its metadata records the split)."""
    split = load_model(model, monitor=False).training.training_metrics.get("split", {})
    parts = split_dataset(
        load_dataset("digits"),
        int(split.get("seed", 0)),
        float(split.get("val_fraction", 0.15)),
        float(split.get("test_fraction", 0.2)),
    )
    return parts.test.features, parts.test.labels


def evaluate(args: argparse.Namespace, out=sys.stdout) -> list[StreamResult]:
    """Every stream of the evaluation for `args.model`; prints progress to stderr."""
    model = Path(args.model)
    x, y = test_split(model)
    results = []
    for stream in digits_streams(x, y, seed=args.seed):
        if args.streams and stream.name not in args.streams:
            continue
        count = args.clean_requests if stream.clean else args.requests
        result = run_stream(model, stream, count, args.seed, args.sample_every, args.check_every)
        print(f"  {stream.name}: alarm at {result.alarm_at or '-'}", file=sys.stderr)
        results.append(result)
    if args.replay:
        clean = next(s for s in digits_streams(x, y, seed=args.seed) if s.clean)
        results.append(run_replay(model, clean, args.replay, args.seed + 1, args.check_every))
        print(f"  {results[-1].name}: alarm at {results[-1].alarm_at or '-'}", file=sys.stderr)
    return results


def run_shift_eval(args: argparse.Namespace, out=sys.stdout) -> int:
    """Run `foldserve shift-eval`. Returns 0, or 2 when the model cannot be served."""
    try:
        shift = load_model(args.model).training.shift_calibration
    except ModelError as exc:
        print(f"foldserve shift-eval: {exc}", file=sys.stderr)
        return 2
    if shift is None:
        print(f"foldserve shift-eval: {args.model} has no shift calibration", file=sys.stderr)
        return 2
    results = evaluate(args, out)
    if args.format == "json":
        print(json.dumps([asdict(r) for r in results]), file=out)
    else:
        print_table(args.model, results, out)
    if args.plot:
        print(save_plot(results, Path(args.plot), title=str(args.model)), file=sys.stderr)
    return 0
