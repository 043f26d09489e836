"""`foldserve predict`: send examples to a server one at a time, print predictions or a summary."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TextIO

import grpc
import numpy as np
from google.protobuf import json_format

from service._proto.foldserve.v1 import predictor_pb2, predictor_pb2_grpc
from service.datasets import DataError, load_dataset, split_dataset
from service.defaults import DIGITS, SPLIT_SEED, TEST_FRACTION, VAL_FRACTION
from service.tools.shift_summary import shift_lines, shift_summary

DEFAULT_SPLIT = {"seed": SPLIT_SEED, "val_fraction": VAL_FRACTION, "test_fraction": TEST_FRACTION}


@dataclass
class Examples:
    """Features to send, with the true class index of each (-1: unknown)."""

    features: Sequence[np.ndarray]
    labels: np.ndarray
    source: str


class ClientError(Exception):
    """Input the client cannot use, or a server it cannot reach."""


def _model_split(description: predictor_pb2.DescribeModelResponse) -> dict[str, Any]:
    metrics = json_format.MessageToDict(description.training_metrics)
    split = metrics.get("split")
    if not isinstance(split, dict):
        print(
            f"foldserve predict: warning: the model records no data split; using {DEFAULT_SPLIT}",
            file=sys.stderr,
        )
        return DEFAULT_SPLIT
    return {
        "seed": int(split.get("seed", DEFAULT_SPLIT["seed"])),
        "val_fraction": float(split.get("val_fraction", DEFAULT_SPLIT["val_fraction"])),
        "test_fraction": float(split.get("test_fraction", DEFAULT_SPLIT["test_fraction"])),
    }


def _class_index(label: Any, classes: list[str]) -> int:
    if isinstance(label, bool) or label is None:
        return -1
    if isinstance(label, int):
        return label if 0 <= label < len(classes) else -1
    text = str(label)
    return classes.index(text) if text in classes else -1


def load_examples(
    data: str,
    label_column: str,
    split: str | None,
    description: predictor_pb2.DescribeModelResponse,
    stdin: TextIO,
) -> Examples:
    """Read the examples to send.

    Args:
        data: "digits", a .csv/.npz path, or "-" for JSON on stdin.
        label_column: the CSV label column.
        split: test/val/train/all (None: test for digits, all otherwise).
        description: the served model, for its split and class labels.
        stdin: where "-" reads from.

    Raises:
        ClientError: unreadable data.
    """
    classes = list(description.class_labels)
    if data == "-":
        return _from_json(stdin.read(), classes)
    try:
        dataset = load_dataset(data, label_column)
    except DataError as exc:
        raise ClientError(str(exc)) from None
    part = split or ("test" if data == DIGITS else "all")
    if part != "all":
        dataset = getattr(split_dataset(dataset, **_model_split(description)), part)
    labels = np.array([_class_index(dataset.class_labels[i], classes) for i in dataset.labels])
    return Examples(dataset.features, labels, f"{data} ({part}: {len(dataset)} examples)")


def _from_json(text: str, classes: list[str]) -> Examples:
    text = text.strip()
    if not text:
        raise ClientError("stdin: no examples (expected JSON)")
    try:
        items = json.loads(text)
        if not isinstance(items, list) or (items and isinstance(items[0], int | float)):
            items = [items]  # a single example given as one JSON value
    except json.JSONDecodeError:
        try:
            items = [json.loads(line) for line in text.splitlines() if line.strip()]
        except json.JSONDecodeError as exc:
            raise ClientError(f"stdin: not JSON or JSON lines ({exc})") from None
    features, labels = [], []
    for i, item in enumerate(items):
        if isinstance(item, dict):
            if "features" not in item:
                raise ClientError(f"stdin: example {i} has no 'features' key")
            features.append(item["features"])
            labels.append(_class_index(item.get("label"), classes))
        elif isinstance(item, list):
            features.append(item)
            labels.append(-1)
        else:
            raise ClientError(f"stdin: example {i} is neither a list nor an object with features")
    try:
        rows = [np.asarray(f, dtype=np.float32).ravel() for f in features]
    except (TypeError, ValueError) as exc:
        raise ClientError(f"stdin: features must be numbers ({exc})") from None
    return Examples(rows, np.asarray(labels, dtype=np.int64), "stdin")


def _percentile_ms(latencies: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(latencies), q) * 1e3) if latencies else float("nan")


def summarize(predicted: list[int], labels: np.ndarray, latencies: list[float], errors: int):
    """The summary: count, errors, accuracy over labelled examples, latency percentiles (ms)."""
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
    print(f"latency_ms: p50={lat['p50']:.3f} p90={lat['p90']:.3f} p99={lat['p99']:.3f}", file=out)
    if "shift" in summary:
        print("\n".join(shift_lines(summary["shift"])), file=out)


def run_predict(
    args: argparse.Namespace, stdin: TextIO = sys.stdin, out: TextIO = sys.stdout
) -> int:
    """Run `foldserve predict`.

    Returns:
        0 when every example got a prediction; 1 on any error (message on stderr).
    """
    with grpc.insecure_channel(args.target) as channel:
        stub = predictor_pb2_grpc.PredictorStub(channel)
        try:
            description = stub.DescribeModel(
                predictor_pb2.DescribeModelRequest(model_name=args.model_name),
                timeout=args.timeout,
                wait_for_ready=True,
            )
            examples = load_examples(args.data, args.label_column, args.split, description, stdin)
        except grpc.RpcError as exc:
            print(
                f"foldserve predict: {args.target}: {exc.code().name}: {exc.details()}",
                file=sys.stderr,
            )
            return 1
        except ClientError as exc:
            print(f"foldserve predict: {exc}", file=sys.stderr)
            return 1
        count = len(examples.features)
        if args.limit is not None:
            count = min(count, args.limit)
        predicted: list[int] = []
        latencies: list[float] = []
        errors = 0
        classes = list(description.class_labels)
        for i in range(count):
            request = predictor_pb2.PredictRequest(
                features=examples.features[i].tolist(),
                request_id=str(i),
                model_name=args.model_name,
            )
            start = time.perf_counter()
            try:
                reply = stub.Predict(request, timeout=args.timeout)
            except grpc.RpcError as exc:
                errors += 1
                predicted.append(-1)
                print(
                    f"foldserve predict: example {i}: {exc.code().name}: {exc.details()}",
                    file=sys.stderr,
                )
                continue
            latencies.append(time.perf_counter() - start)
            predicted.append(reply.label)
            if not args.summary:
                line = {"index": i, "label": reply.label, "class": reply.class_name}
                line["probability"] = round(float(reply.probabilities[reply.label]), 6)
                true = int(examples.labels[i])
                if true >= 0:
                    line["true_class"] = classes[true]
                line["latency_ms"] = round(latencies[-1] * 1e3, 3)
                print(json.dumps(line), file=out)
        summary = summarize(predicted, examples.labels, latencies, errors)
        if args.summary:
            summary["shift"] = _shift_after(stub, args)
    if args.summary:
        _print_summary(summary, args.format, out)
    return 1 if errors else 0


def _shift_after(stub: predictor_pb2_grpc.PredictorStub, args: argparse.Namespace) -> dict:
    """The shift scores the server reports once the examples are sent (DescribeModel)."""
    try:
        request = predictor_pb2.DescribeModelRequest(model_name=args.model_name)
        return shift_summary(stub.DescribeModel(request, timeout=args.timeout).shift)
    except grpc.RpcError as exc:
        return {"enabled": False, "reason": f"DescribeModel failed: {exc.code().name}"}
