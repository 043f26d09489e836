"""`foldserve predict`: send examples to a server one at a time, print predictions or a summary.

It first asks the server to describe its model (failing at once, with gRPC's reason, when nothing
listens there), then reads the examples and checks them against that model (service/tools/
examples.py: labels, feature count), and only then sends them.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field
from typing import Any, TextIO

import grpc
import numpy as np

from foldserve._proto.foldserve.v1 import predictor_pb2, predictor_pb2_grpc
from foldserve.client.channel import ChannelError, open_channel
from foldserve.client.examples import ClientError, Examples, load_examples
from foldserve.client.rpc_errors import describe_rpc_error
from foldserve.client.shift_summary import shift_lines, shift_summary


@dataclass
class Tally:
    """What the calls returned: predicted class index per example (-1: failed), latencies."""

    predicted: list[int] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    errors: int = 0


def _percentile_ms(latencies: list[float], q: float) -> float | None:
    return float(np.percentile(np.asarray(latencies), q) * 1e3) if latencies else None


def summarize(
    predicted: list[int], labels: np.ndarray, latencies: list[float], errors: int
) -> dict[str, Any]:
    """The summary: count, errors, accuracy over labelled examples, latency percentiles (ms).

    Accuracy is None without labels; each latency percentile is None when no call succeeded.
    """
    known = labels[: len(predicted)] >= 0
    pred = np.asarray(predicted, dtype=np.int64)
    correct = int(np.sum((pred == labels[: len(pred)]) & known))
    labelled = int(np.sum(known))
    return {
        "count": len(latencies),
        "errors": errors,
        "labelled": labelled,
        "correct": correct,
        "accuracy": correct / labelled if labelled else None,
        "latency_ms": {q: _percentile_ms(latencies, int(q[1:])) for q in ("p50", "p90", "p99")},
    }


def _print_summary(summary: dict[str, Any], fmt: str, out: TextIO) -> None:
    if fmt == "json":
        print(json.dumps(summary), file=out)
        return
    print(f"examples: {summary['count']} (errors: {summary['errors']})", file=out)
    if summary["accuracy"] is None:
        print("accuracy: n/a (no labels)", file=out)
    else:
        print(
            f"accuracy: {summary['accuracy']:.4f} ({summary['correct']}/{summary['labelled']})",
            file=out,
        )
    lat = summary["latency_ms"]
    if lat["p50"] is None:
        print("latency_ms: n/a (no call succeeded)", file=out)
    else:
        print(
            f"latency_ms: p50={lat['p50']:.3f} p90={lat['p90']:.3f} p99={lat['p99']:.3f}", file=out
        )
    if "shift" in summary:
        print("\n".join(shift_lines(summary["shift"])), file=out)


def _prepare(
    stub: predictor_pb2_grpc.PredictorStub, args: argparse.Namespace, stdin: TextIO
) -> tuple[predictor_pb2.DescribeModelResponse, Examples]:
    """Describe the served model, then read and check the examples against it.

    Raises:
        grpc.RpcError: the server did not answer; ClientError: unusable examples.
    """
    # No wait_for_ready: a closed port fails now (UNAVAILABLE), not when --timeout runs out.
    description = stub.DescribeModel(
        predictor_pb2.DescribeModelRequest(model_name=args.model_name), timeout=args.timeout
    )
    examples = load_examples(
        args.data, args.label_column, args.split, description, stdin, args.limit
    )
    return description, examples


def _send(
    stub: predictor_pb2_grpc.PredictorStub, index: int, features: np.ndarray, args, tally: Tally
) -> predictor_pb2.PredictResponse | None:
    """One Predict call, recorded in `tally`; None (message on stderr) when it failed."""
    request = predictor_pb2.PredictRequest(
        features=features.tolist(), request_id=str(index), model_name=args.model_name
    )
    start = time.perf_counter()
    try:
        reply = stub.Predict(request, timeout=args.timeout)
    except grpc.RpcError as exc:
        tally.errors += 1
        tally.predicted.append(-1)
        print(
            f"foldserve predict: example index {index}: {describe_rpc_error(exc)}", file=sys.stderr
        )
        return None
    tally.latencies.append(time.perf_counter() - start)
    tally.predicted.append(reply.label)
    return reply


def _send_all(
    stub: predictor_pb2_grpc.PredictorStub,
    examples: Examples,
    classes: list[str],
    args: argparse.Namespace,
    out: TextIO,
) -> Tally:
    """Send every example in order; without --summary print one JSON line per answer."""
    tally = Tally()
    for i, features in enumerate(examples.features):
        reply = _send(stub, i, features, args, tally)
        if reply is None or args.summary:
            continue
        line = {"index": i, "label": reply.label, "class": reply.class_name}
        line["probability"] = round(float(reply.probabilities[reply.label]), 6)
        true = int(examples.labels[i])
        if true >= 0:
            line["true_class"] = classes[true]
        line["latency_ms"] = round(tally.latencies[-1] * 1e3, 3)
        print(json.dumps(line), file=out)
    return tally


def run_predict(
    args: argparse.Namespace, stdin: TextIO = sys.stdin, out: TextIO = sys.stdout
) -> int:
    """Run `foldserve predict`.

    Returns:
        0 when every example got a prediction; 1 on any error (message on stderr). A server that
        cannot be reached, a label that names no class of the model, or examples of the wrong
        size stop the run before anything is sent.
    """
    try:
        channel = open_channel(args)
    except ChannelError as exc:
        print(f"foldserve predict: {exc}", file=sys.stderr)
        return 1
    with channel:
        stub = predictor_pb2_grpc.PredictorStub(channel)
        try:
            description, examples = _prepare(stub, args, stdin)
        except grpc.RpcError as exc:
            print(f"foldserve predict: {args.target}: {describe_rpc_error(exc)}", file=sys.stderr)
            return 1
        except ClientError as exc:
            print(f"foldserve predict: {exc}", file=sys.stderr)
            return 1
        tally = _send_all(stub, examples, list(description.class_labels), args, out)
        if args.summary:
            summary = summarize(tally.predicted, examples.labels, tally.latencies, tally.errors)
            summary["shift"] = _shift_after(stub, args)
            _print_summary(summary, args.format, out)
    return 1 if tally.errors else 0


def _shift_after(stub: predictor_pb2_grpc.PredictorStub, args: argparse.Namespace) -> dict:
    """The shift scores the server reports once the examples are sent (DescribeModel)."""
    try:
        request = predictor_pb2.DescribeModelRequest(model_name=args.model_name)
        return shift_summary(stub.DescribeModel(request, timeout=args.timeout).shift)
    except grpc.RpcError as exc:
        return {"enabled": False, "reason": f"DescribeModel failed: {exc.code().name}"}
