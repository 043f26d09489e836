"""A request checked against the model it names: the feeds onnxruntime gets and the outputs to
return.

Every input given exactly once, by name, with the model's datatype and rank, its fixed dimensions
as the graph has them and its dynamic ones of any size >= 1; float values finite; requested
outputs known and not repeated; BYTES elements for a string input valid UTF-8 (fed as `str`,
`core.strings`). A `classify` request (`Predict`) gives one example's flat values
for the classifier input instead. Every error is INVALID_ARGUMENT naming the field, e.g.
"inputs[1].datatype: input 'mask' is BOOL, got 'FP32'".
"""

from __future__ import annotations

import numpy as np

from foldserve.core.datatypes import datatype_of
from foldserve.core.errors import invalid
from foldserve.core.graph import TensorSpec
from foldserve.core.model import Model
from foldserve.core.strings import is_strings, onnx_strings
from foldserve.core.types import InferInput, InferRequest

MAX_REQUEST_ID_CHARS = 1024  # a request id is echoed in the reply: bounded


def check_request_id(value: str, field: str) -> None:
    """A request id is echoed in the reply, so it is bounded.

    Raises:
        RequestError: INVALID_ARGUMENT when it is longer than MAX_REQUEST_ID_CHARS.
    """
    if len(value) > MAX_REQUEST_ID_CHARS:
        raise invalid(f"{field}: {len(value)} characters; at most {MAX_REQUEST_ID_CHARS}")


def check_finite(values: np.ndarray, field: str, kind: str = "") -> None:
    """Raises RequestError (INVALID_ARGUMENT) naming the first NaN or infinity in `values`.

    Args:
        kind: how the expected values are named ("float32 ": "expected finite float32 values").
    """
    finite = np.isfinite(values)
    if not finite.all():
        index = int(np.argmin(finite.ravel()))
        raise invalid(
            f"{field}[{index}]: {values.ravel()[index]} is not finite; "
            f"expected finite {kind}values (no NaN or infinity)"
        )


def feeds(model: Model, request: InferRequest) -> dict[str, np.ndarray]:
    """Every model input by name, checked.

    Raises:
        RequestError: INVALID_ARGUMENT naming the field for any mismatch; FAILED_PRECONDITION
            for a `classify` request to a model that is not classifier-shaped.
    """
    if request.classify:
        return _classifier_feeds(model, request)
    specs = model.inputs_by_name
    found: dict[str, np.ndarray] = {}
    for tensor in request.inputs:
        spec = specs.get(tensor.name)
        if spec is None:
            raise invalid(
                f"{tensor.field}.name: unknown input {tensor.name!r}; the model's inputs are "
                f"{list(specs)}"
            )
        if tensor.name in found:
            raise invalid(f"{tensor.field}.name: input {tensor.name!r} given twice")
        _check_tensor(tensor, spec)
        found[tensor.name] = _feed(tensor, spec)
    if len(found) < len(specs):
        missing = [name for name in specs if name not in found]
        raise invalid(f"inputs: input(s) {missing} missing; the model's inputs are {list(specs)}")
    if len(found) > 1 and all(spec.shape and spec.shape[0] is None for spec in specs.values()):
        _check_batch(request)
    return found


def _check_batch(request: InferRequest) -> None:
    """Inputs whose first dimension is the model's batch axis agree on the batch size (no
    broadcast answer for inputs of different batches)."""
    first = request.inputs[0]
    for tensor in request.inputs[1:]:
        if tensor.data.shape[0] != first.data.shape[0]:
            raise invalid(
                f"{tensor.field}.shape: input {tensor.name!r} has a batch of "
                f"{tensor.data.shape[0]}, input {first.name!r} of {first.data.shape[0]}; every "
                "input's first dimension is the batch"
            )


def _check_tensor(tensor: InferInput, spec: TensorSpec) -> None:
    field, data = tensor.field, tensor.data
    expected = datatype_of(spec.dtype).name
    if tensor.datatype != expected:
        raise invalid(
            f"{field}.datatype: input {spec.name!r} is {expected}, got {tensor.datatype!r}"
        )
    shape = data.shape
    fits = len(shape) == len(spec.shape) and all(
        (d >= 1 if want is None else d == want) for d, want in zip(shape, spec.shape, strict=True)
    )
    if not fits:
        dims = ", ".join("dynamic" if d is None else str(d) for d in spec.shape)
        raise invalid(
            f"{field}.shape: input {spec.name!r} has shape [{dims}] (dynamic: any size >= 1), "
            f"got {list(shape)}"
        )
    if spec.is_float:
        check_finite(data, f"{field} values")


def _feed(tensor: InferInput, spec: TensorSpec) -> np.ndarray:
    """A checked input as onnxruntime takes it (a string input: `str` elements)."""
    if is_strings(spec.dtype):
        return onnx_strings(tensor.data, tensor.field, spec.name)
    return tensor.data


def _classifier_feeds(model: Model, request: InferRequest) -> dict[str, np.ndarray]:
    """The one example of a `classify` request, as a [1, *example shape] batch of the input's
    float type."""
    classifier = model.require_classifier()
    (tensor,) = request.inputs
    values, field = tensor.data, tensor.field
    size = classifier.example_size
    if values.size != size:
        got = "none (empty features)" if values.size == 0 else str(values.size)
        shape = list(classifier.example_shape)
        raise invalid(f"{field}: expected {size} float32 values (shape {shape}), got {got}")
    check_finite(values, field)
    batch = values.reshape((1, *classifier.example_shape))
    return {classifier.input.name: batch.astype(classifier.input.dtype, copy=False)}


def output_names(model: Model, request: InferRequest) -> list[str]:
    """The outputs to return, in request order; every output when none is named (a `classify`
    request: the classifier's logits and probabilities, when the graph has them).

    Raises:
        RequestError: INVALID_ARGUMENT for an unknown or repeated name.
    """
    known = model.output_names
    if request.classify:
        return list(model.classifier_outputs)
    if not request.outputs:
        return list(known)
    names: list[str] = []
    for output in request.outputs:
        if output.name not in known:
            raise invalid(
                f"{output.field}.name: unknown output {output.name!r}; expected one of "
                f"{list(known)}"
            )
        if output.name in names:
            raise invalid(f"{output.field}.name: output {output.name!r} requested twice")
        names.append(output.name)
    return names
