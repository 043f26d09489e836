"""The examples `foldserve predict` sends, read and checked against the served model.

Everything is checked before the first call, so a mismatch between data and model is one clear
error instead of one per example:
- a label names a class by its text: it is matched against the model's class labels as text, so
  `1` and `"1"` both mean the class labelled "1" (never "the class at index 1"); a label that
  matches no class is an error naming the example and listing the classes;
- every example must have as many features as the model's input shape holds.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TextIO

import numpy as np
from google.protobuf import json_format

from foldserve._proto.foldserve.v1 import predictor_pb2
from foldserve.datasets import (
    DIGITS,
    SPLIT_SEED,
    TEST_FRACTION,
    VAL_FRACTION,
    DataError,
    Dataset,
    load_dataset,
    split_dataset,
)

DEFAULT_SPLIT = {"seed": SPLIT_SEED, "val_fraction": VAL_FRACTION, "test_fraction": TEST_FRACTION}
# Error messages list at most this many class labels.
SHOWN_CLASSES = 20


@dataclass
class Examples:
    """Features to send, with the model's class index of each true label (-1: no label)."""

    features: Sequence[np.ndarray]
    labels: np.ndarray
    source: str


class ClientError(Exception):
    """Input the client cannot use with the served model; the message says why."""


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


def _no_such_class(classes: list[str]) -> str:
    shown = classes if len(classes) <= SHOWN_CLASSES else [*classes[:SHOWN_CLASSES], "..."]
    return (
        f"matches none of the model's {len(classes)} classes {shown} (labels are matched as text)"
    )


def class_index(label: Any, classes: list[str], where: str) -> int:
    """The index of the model class that `label` names; -1 when there is no label (None).

    A label names a class by its text: 1 and "1" both mean the class labelled "1".

    Raises:
        ClientError: the label names no class of the model (the message starts with `where`).
    """
    if label is None:
        return -1
    if isinstance(label, bool) or not isinstance(label, str | int | float):
        raise ClientError(f"{where}: label {label!r} is not a class label (text or a number)")
    text = label if isinstance(label, str) else str(label)
    if text not in classes:
        raise ClientError(f"{where}: label {text!r} {_no_such_class(classes)}")
    return classes.index(text)


def _to_model_classes(dataset: Dataset, classes: list[str], data: str) -> np.ndarray:
    """Maps the data set's class indices to the model's; every label must be a model class."""
    to_model = np.empty(len(dataset.class_labels), dtype=np.int64)
    for i, label in enumerate(dataset.class_labels):
        if label not in classes:
            first = int(np.flatnonzero(dataset.labels == i)[0]) + 1
            raise ClientError(
                f"{data}: label {label!r} (first at example {first}, counting from 1) "
                f"{_no_such_class(classes)}"
            )
        to_model[i] = classes.index(label)
    return to_model


def load_examples(
    data: str,
    label_column: str,
    split: str | None,
    description: predictor_pb2.DescribeModelResponse,
    stdin: TextIO,
    limit: int | None = None,
) -> Examples:
    """Read the examples to send and check them against the model: feature count, then labels.

    Args:
        data: "digits", a .csv/.npz path, or "-" for JSON on stdin.
        label_column: the CSV label column.
        split: test/val/train/all (None: test for digits, all otherwise).
        description: the served model: its split, input shape and class labels.
        stdin: where "-" reads from.
        limit: keep only the first `limit` examples (None: all).

    Raises:
        ClientError: unreadable data, an example whose feature count is not the model's, or a
            label that names no class of the model.
    """
    classes = list(description.class_labels)
    if data == "-":
        return _from_json(stdin.read(), description.input_shape, classes, limit)
    try:
        dataset = load_dataset(data, label_column)
        part = split or ("test" if data == DIGITS else "all")
        chosen = dataset
        if part != "all":
            chosen = getattr(split_dataset(dataset, **_model_split(description)), part)
    except DataError as exc:
        raise ClientError(str(exc)) from None
    source = f"{data} ({part}: {len(chosen)} examples)"
    features = chosen.features[:limit]
    check_feature_count(source, features, description.input_shape)
    # Labels are checked over the whole file, so an error names an example the user can find.
    to_model = _to_model_classes(dataset, classes, data)
    return Examples(features, to_model[chosen.labels[:limit]], source)


def _json_items(text: str) -> list[Any]:
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
    return items


def _json_example(where: str, item: Any) -> tuple[Any, Any]:
    """An example's features and label (None: no label), unchecked."""
    if isinstance(item, dict):
        if "features" not in item:
            raise ClientError(f"{where} has no 'features' key")
        return item["features"], item.get("label")
    if isinstance(item, list):
        return item, None
    raise ClientError(f"{where} is neither a list of numbers nor an object with 'features'")


def _from_json(
    text: str, input_shape: Sequence[int], classes: list[str], limit: int | None
) -> Examples:
    items = _json_items(text)[:limit]
    where = [f"stdin: example index {i}" for i in range(len(items))]
    pairs = [_json_example(w, item) for w, item in zip(where, items, strict=True)]
    try:
        rows = [np.asarray(features, dtype=np.float32).ravel() for features, _ in pairs]
    except (TypeError, ValueError) as exc:
        raise ClientError(f"stdin: features must be numbers ({exc})") from None
    check_feature_count("stdin", rows, input_shape)
    labels = [class_index(label, classes, w) for w, (_, label) in zip(where, pairs, strict=True)]
    return Examples(rows, np.asarray(labels, dtype=np.int64), "stdin")


def check_feature_count(
    source: str, rows: Sequence[np.ndarray], input_shape: Sequence[int]
) -> None:
    """Check that every example (row) has as many values as one input of the model.

    Raises:
        ClientError: names the first example with another count (or, when all share one, that
            count), with the model's; the message starts with `source`.
    """
    expected = int(np.prod(input_shape))
    sizes = [int(row.size) for row in rows]
    wrong = next((i for i, size in enumerate(sizes) if size != expected), None)
    if wrong is None:
        return
    tail = f"but the model expects {expected} (input shape {list(input_shape)}); nothing was sent"
    if len(set(sizes)) == 1:
        raise ClientError(f"{source}: each example has {sizes[0]} features, {tail}")
    raise ClientError(f"{source}: example index {wrong} has {sizes[wrong]} features, {tail}")
