"""Protobuf ↔ numpy for both APIs: request decoding and validation (numpy, no per-value Python
loops) and response encoding.

Every check raises `RequestError` whose message names the offending field and what was expected,
e.g. "features: expected 64 float32 values (shape [64]), got 63".
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from service._proto.inference import grpc_predict_v2_pb2 as v2
from service.core.errors import invalid
from service.core.model import Model
from service.defaults import MAX_REQUEST_ID_CHARS

FP32 = "FP32"
_LITTLE_F32 = np.dtype("<f4")
_NON_FP32_CONTENTS = (
    "bool_contents",
    "int_contents",
    "int64_contents",
    "uint_contents",
    "uint64_contents",
    "fp64_contents",
    "bytes_contents",
)


def check_request_id(value: str, field: str) -> None:
    """A request id is echoed in the reply, so it is bounded.

    Raises:
        RequestError: INVALID_ARGUMENT when it is longer than MAX_REQUEST_ID_CHARS.
    """
    if len(value) > MAX_REQUEST_ID_CHARS:
        raise invalid(f"{field}: {len(value)} characters; at most {MAX_REQUEST_ID_CHARS}")


def check_finite(values: np.ndarray, field: str, kind: str = "float32 ") -> None:
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


def features_to_batch(features: Sequence[float], model: Model) -> np.ndarray:
    """Turn `PredictRequest.features` into a [1, *input_shape] batch of the input's float type.

    Raises:
        RequestError: FAILED_PRECONDITION for a model that is not classifier-shaped (from
            `Model.input`); INVALID_ARGUMENT for a wrong count or a non-finite value.
    """
    spec = model.input
    count = len(features)
    if count != spec.size:
        got = "none (empty features)" if count == 0 else str(count)
        raise invalid(
            f"features: expected {spec.size} float32 values (shape {list(spec.shape)}), got {got}"
        )
    values = np.array(features, dtype=np.float32)
    check_finite(values, "features")
    return values.reshape((1, *spec.shape)).astype(spec.dtype, copy=False)


def decode_infer_inputs(request: v2.ModelInferRequest, model: Model) -> tuple[np.ndarray, bool]:
    """Decode a V2 `ModelInferRequest`'s single FP32 input into a [N, *input_shape] batch.

    Returns:
        (batch, raw): raw is True when the data came in `raw_input_contents`.

    Raises:
        RequestError: INVALID_ARGUMENT naming the field for any mismatch.
    """
    spec = model.input
    if len(request.inputs) != 1:
        raise invalid(f"inputs: expected 1 input tensor ({spec.name!r}), got {len(request.inputs)}")
    tensor = request.inputs[0]
    if tensor.name != spec.name:
        raise invalid(f"inputs[0].name: unknown input {tensor.name!r}; expected {spec.name!r}")
    if tensor.datatype != FP32:
        raise invalid(f"inputs[0].datatype: expected {FP32}, got {tensor.datatype!r}")
    shape = tuple(int(d) for d in tensor.shape)
    if len(shape) != 1 + len(spec.shape) or shape[0] < 1 or shape[1:] != spec.shape:
        expected = ", ".join(["N", *(str(d) for d in spec.shape)])
        raise invalid(f"inputs[0].shape: expected [{expected}] with N >= 1, got {list(shape)}")
    # math.prod on Python ints: numpy's int64 product wraps around for absurd shapes.
    count = math.prod(shape)
    raw_contents = request.raw_input_contents
    has_typed = tensor.HasField("contents")
    if raw_contents:
        if has_typed:
            raise invalid("inputs[0].contents: data given in both contents and raw_input_contents")
        if len(raw_contents) != 1:
            raise invalid(
                f"raw_input_contents: expected 1 entry (one per input), got {len(raw_contents)}"
            )
        batch = _decode_raw(raw_contents[0], count, shape)
        raw = True
    elif has_typed:
        batch = _decode_typed(tensor.contents, count, shape)
        raw = False
    else:
        raise invalid(
            f"inputs[0]: no data; expected {count} FP32 values for shape {list(shape)} in "
            "contents.fp32_contents or raw_input_contents"
        )
    check_finite(batch, "inputs[0] values")
    return batch, raw


def _decode_raw(data: bytes, count: int, shape: tuple[int, ...]) -> np.ndarray:
    if len(data) % 4:
        raise invalid(
            f"raw_input_contents[0]: {len(data)} bytes is not a multiple of 4 (FP32 is 4 bytes)"
        )
    if len(data) != 4 * count:
        raise invalid(
            f"raw_input_contents[0]: expected {4 * count} bytes ({count} FP32 values for shape "
            f"{list(shape)}), got {len(data)}"
        )
    return np.frombuffer(data, dtype=_LITTLE_F32).astype(np.float32, copy=False).reshape(shape)


def _decode_typed(contents, count: int, shape: tuple[int, ...]) -> np.ndarray:
    others = [name for name in _NON_FP32_CONTENTS if len(getattr(contents, name))]
    if others:
        raise invalid(
            f"inputs[0].contents: FP32 data belongs in fp32_contents, got {', '.join(others)}"
        )
    values = contents.fp32_contents
    if len(values) != count:
        raise invalid(
            f"inputs[0].contents.fp32_contents: expected {count} values for shape {list(shape)}, "
            f"got {len(values)}"
        )
    return np.array(values, dtype=np.float32).reshape(shape)


def requested_outputs(request: v2.ModelInferRequest, model: Model) -> list[str]:
    """Names of the outputs to return, in request order; all of them when none is named.

    Raises:
        RequestError: INVALID_ARGUMENT for an unknown or repeated name.
    """
    known = model.output_names
    if not request.outputs:
        return list(known)
    names: list[str] = []
    for i, output in enumerate(request.outputs):
        if output.name not in known:
            raise invalid(
                f"outputs[{i}].name: unknown output {output.name!r}; expected one of {list(known)}"
            )
        if output.name in names:
            raise invalid(f"outputs[{i}].name: output {output.name!r} requested twice")
        names.append(output.name)
    return names


def encode_infer_outputs(
    response: v2.ModelInferResponse, outputs: dict[str, np.ndarray], names: list[str], raw: bool
) -> None:
    """Add the named outputs to a V2 response: raw bytes for a raw request, typed otherwise.

    Triton answers raw requests with `raw_output_contents`, and tritonclient reads only those.
    """
    for name in names:
        array = outputs[name]
        output = response.outputs.add(name=name, datatype=FP32, shape=array.shape)
        if raw:
            response.raw_output_contents.append(array.astype(_LITTLE_F32, copy=False).tobytes())
        else:
            output.contents.fp32_contents.extend(array.ravel().tolist())
