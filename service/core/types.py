"""The plain values the data plane takes and returns: no protocol's messages, only names, numpy
arrays, parameters and numbers. Every adapter decodes its protocol into these and encodes these
back into its protocol."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

# A request or tensor parameter's value, as the V2 protocol allows: bool, int or string.
Parameter = bool | int | str


@dataclass(frozen=True, slots=True)
class InferInput:
    """One input tensor of a request.

    Attributes:
        name: the model input it is for.
        data: its values, decoded with the datatype and shape the request gave.
        datatype: the V2 datatype name the request gave.
        field: how error messages name it ("inputs[0]", or "features" for `Predict`).
    """

    name: str
    data: np.ndarray
    datatype: str
    field: str
    parameters: Mapping[str, Parameter] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RequestedOutput:
    """An output a request asks for by name, with its parameters."""

    name: str
    field: str
    parameters: Mapping[str, Parameter] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class InferRequest:
    """One inference request.

    Attributes:
        model_name, model_version: the model and version asked for ("": the default).
        inputs: every input tensor.
        outputs: the outputs to return, in this order (empty: every output, in graph order).
        classify: the request is one example for a classifier-shaped model (`Predict`): one
            input of flat values for its classifier input, answered with its class
            (`InferResponse.classification`).
    """

    model_name: str
    model_version: str
    inputs: Sequence[InferInput]
    outputs: Sequence[RequestedOutput] = ()
    id: str = ""
    parameters: Mapping[str, Parameter] = field(default_factory=dict)
    classify: bool = False


@dataclass(frozen=True, slots=True)
class Classification:
    """A classifier's answer for each example: its predicted class, the class probabilities, and
    the labels of the classes (position = class index)."""

    labels: np.ndarray
    probabilities: np.ndarray
    class_labels: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class InferResponse:
    """The answer to an `InferRequest`: the outputs asked for, in the order asked.

    `in_shared_memory`: the outputs written to shared memory (`core.shared_tensors`), by name,
    with the parameters the answer gives them; the answer carries their name, datatype, shape and
    those parameters, not their data.
    """

    model_name: str
    model_version: str
    id: str
    outputs: dict[str, np.ndarray]
    classification: Classification | None = None
    in_shared_memory: Mapping[str, Mapping[str, Parameter]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class IndexEntry:
    """One model version of the repository, with its state (READY, UNAVAILABLE...) and why."""

    name: str
    version: str
    state: str
    reason: str = ""
