"""Triton's classification extension: a requested output with the parameter `classification: k`
is answered with its top k classes instead of its values.

For an output of shape [batch, classes] (or [batch, d1, d2, ...]: the classes are the values past
the batch axis, row-major) the answer is a BYTES tensor of shape [batch, k]: per row, the k
highest values, highest first, each the string "<value>:<index>" or, for an output the model has
class labels for, "<value>:<index>:<label>".

- The value is written as Triton writes it (C++ `std::to_string`): a float with six decimals
  ("0.812500", "-3.000000", "nan", "inf"), an integer in decimal ("42").
- Ties rank by index, lowest first; NaN ranks below every number.
- Labels: a classifier's logits and probabilities outputs carry the model's class labels
  (`Model.class_labels`: the file's, or config.json's, else "0".."C-1"); other outputs have none.
- k must be an integer from 1 to the output's number of classes (Triton clamps a larger k; here
  it is refused), and the output numeric (BOOL and BYTES outputs cannot be ranked).

Every refusal is INVALID_ARGUMENT naming `outputs[i].parameters.classification`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from foldserve.core.datatypes import datatype_of, element_count
from foldserve.core.errors import invalid
from foldserve.core.graph import TensorSpec
from foldserve.core.model import Model
from foldserve.core.strings import bytes_array
from foldserve.core.types import InferRequest, RequestedOutput

EXTENSION = "classification"  # the name `ServerMetadata` lists
PARAMETER = "classification"  # the requested output's parameter: the class count k


@dataclass(frozen=True)
class Wanted:
    """One output to answer with its top `count` classes; `field` names the parameter."""

    name: str
    count: int
    field: str


def classified_outputs(model: Model, request: InferRequest) -> list[Wanted]:
    """The outputs the request asks to classify, checked against the model (before the run).

    Raises:
        RequestError: INVALID_ARGUMENT naming `outputs[i].parameters.classification`: a count
            that is no integer or out of range, an output that is not numeric or has no
            classes axis.
    """
    wanted = []
    for output in request.outputs:
        if PARAMETER in output.parameters:
            spec = next(spec for spec in model.outputs if spec.name == output.name)
            wanted.append(_wanted(output, spec))
    return wanted


def _wanted(output: RequestedOutput, spec: TensorSpec) -> Wanted:
    field = f"{output.field}.parameters.{PARAMETER}"
    count = output.parameters[PARAMETER]
    if type(count) is not int:
        raise invalid(f"{field}: expected an integer number of classes, got {count!r}")
    if spec.dtype.kind not in "iuf":
        raise invalid(
            f"{field}: output {output.name!r} is {datatype_of(spec.dtype).name}; classification "
            "ranks numeric outputs only"
        )
    if len(spec.shape) < 2:
        raise invalid(
            f"{field}: output {output.name!r} has shape {spec.shown_shape}; classification needs "
            "[batch, classes]"
        )
    past_batch = spec.shape[1:]
    classes = None if None in past_batch else element_count(past_batch)  # type: ignore[arg-type]
    _check_count(count, classes, output.name, field)
    return Wanted(output.name, count, field)


def _check_count(count: int, classes: int | None, name: str, field: str) -> None:
    """1 <= count <= classes (classes None: not known before the run)."""
    if classes is None and count < 1:
        raise invalid(f"{field}: {count}; expected a number of classes from 1")
    if classes is not None and not 1 <= count <= classes:
        raise invalid(
            f"{field}: {count}; expected 1 to {classes}, the number of classes of output {name!r}"
        )


def classify_outputs(
    model: Model, wanted: Sequence[Wanted], outputs: dict[str, np.ndarray]
) -> None:
    """Replace each wanted output in `outputs` by its top-k classes (after the run).

    Raises:
        RequestError: INVALID_ARGUMENT for a count past a dynamic number of classes.
    """
    for want in wanted:
        values = outputs[want.name]
        outputs[want.name] = top_k(values, want.count, labels_of(model, want.name), want.field)


def labels_of(model: Model, name: str) -> Sequence[str]:
    """The class labels of an output: the model's, for a classifier's logits or probabilities."""
    classifier = model.classifier
    if classifier is None or name not in (classifier.logits, classifier.probabilities):
        return ()
    return model.class_labels


def top_k(values: np.ndarray, count: int, labels: Sequence[str], field: str) -> np.ndarray:
    """The `count` highest classes of each row of `values` ([batch, ...]), as a BYTES array of
    shape [batch, count] of "<value>:<index>[:<label>]" (module docstring).

    Raises:
        RequestError: INVALID_ARGUMENT when the rows have fewer than `count` classes.
    """
    batch = values.shape[0]
    rows = values.reshape(batch, element_count(values.shape[1:]))
    classes = rows.shape[1]
    if count > classes:
        raise invalid(f"{field}: {count}; expected 1 to {classes}, the output's number of classes")
    # A key whose ascending stable order is the values' descending one, ties by index: -x for
    # floats (NaN sorts last), ~x for integers (exact, no overflow at the extremes).
    key = -rows.astype(np.float64) if rows.dtype.kind == "f" else ~rows
    order = np.argsort(key, axis=1, kind="stable")[:, :count]
    picked = np.take_along_axis(rows, order, axis=1)
    show = _float_text if rows.dtype.kind == "f" else str
    labelled = len(labels) == classes
    texts = [
        f"{show(value)}:{index}:{labels[index]}" if labelled else f"{show(value)}:{index}"
        for value, index in zip(picked.ravel().tolist(), order.ravel().tolist(), strict=True)
    ]
    return bytes_array([text.encode("utf-8") for text in texts], [batch, count])


def _float_text(value: float) -> str:
    """C's "%f", which `std::to_string` writes: six decimals."""
    return f"{value:f}"
