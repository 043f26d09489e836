"""The V2 protocol's tensor datatypes: each with its numpy dtype and its typed contents field, and
the conversion of one tensor's data, raw or typed, to and from numpy.

| V2 datatype | ONNX type | typed contents field |
| --- | --- | --- |
| `BOOL` | `bool` | `bool_contents` |
| `INT8`, `INT16`, `INT32` | `int8`, `int16`, `int32` | `int_contents` |
| `INT64` | `int64` | `int64_contents` |
| `UINT8`, `UINT16`, `UINT32` | `uint8`, `uint16`, `uint32` | `uint_contents` |
| `UINT64` | `uint64` | `uint64_contents` |
| `FP16` | `float16` | none: raw only, as in Triton |
| `FP32` | `float` | `fp32_contents` |
| `FP64` | `double` | `fp64_contents` |

Raw data (`raw_input_contents`, `raw_output_contents`) is little-endian, row-major; BOOL is one
byte per value, 0 or 1.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from service._proto.inference import grpc_predict_v2_pb2 as v2
from service.core.errors import invalid


@dataclass(frozen=True)
class Datatype:
    """One V2 datatype: its name, numpy dtype and typed contents field (None: raw only)."""

    name: str
    dtype: np.dtype
    field: str | None

    @property
    def wire(self) -> np.dtype:
        """The little-endian dtype of its raw bytes."""
        return self.dtype.newbyteorder("<")


DATATYPES = tuple(
    Datatype(name, np.dtype(dtype), field)
    for name, dtype, field in (
        ("BOOL", np.bool_, "bool_contents"),
        ("INT8", np.int8, "int_contents"),
        ("INT16", np.int16, "int_contents"),
        ("INT32", np.int32, "int_contents"),
        ("INT64", np.int64, "int64_contents"),
        ("UINT8", np.uint8, "uint_contents"),
        ("UINT16", np.uint16, "uint_contents"),
        ("UINT32", np.uint32, "uint_contents"),
        ("UINT64", np.uint64, "uint64_contents"),
        ("FP16", np.float16, None),
        ("FP32", np.float32, "fp32_contents"),
        ("FP64", np.float64, "fp64_contents"),
    )
)
BY_DTYPE = {d.dtype: d for d in DATATYPES}
CONTENTS_FIELDS = (*dict.fromkeys(d.field for d in DATATYPES if d.field), "bytes_contents")


def datatype_of(dtype: np.dtype) -> Datatype:
    """The V2 datatype of a numpy dtype (one `service.core.graph_spec.ONNX_TYPES` has)."""
    return BY_DTYPE[np.dtype(dtype)]


def decode_raw(data: bytes, datatype: Datatype, shape: list[int], field: str) -> np.ndarray:
    """One input's raw bytes as an array of `shape`.

    Raises:
        RequestError: INVALID_ARGUMENT for a byte count that does not fit, or a BOOL byte that
            is not 0 or 1.
    """
    count = _count(shape)
    size = datatype.dtype.itemsize
    if len(data) != size * count:
        raise invalid(
            f"{field}: expected {size * count} bytes ({count} {datatype.name} values of "
            f"{size} byte(s) for shape {shape}), got {len(data)}"
        )
    if datatype.name == "BOOL":
        values = np.frombuffer(data, np.uint8)
        if values.size and values.max() > 1:
            index = int(np.argmax(values > 1))
            raise invalid(f"{field}[{index}]: byte {values[index]} is not a BOOL (0 or 1)")
        return values.view(np.bool_).reshape(shape)
    return np.frombuffer(data, datatype.wire).astype(datatype.dtype, copy=False).reshape(shape)


def decode_typed(
    contents: v2.InferTensorContents, datatype: Datatype, shape: list[int], field: str
) -> np.ndarray:
    """One input's typed contents as an array of `shape`.

    Raises:
        RequestError: INVALID_ARGUMENT for FP16 (raw only), data in another field, a wrong
            count, or a value out of the datatype's range.
    """
    if datatype.field is None:
        raise invalid(
            f"{field}: {datatype.name} data goes in raw_input_contents only (no typed field)"
        )
    others = [
        name for name in CONTENTS_FIELDS if name != datatype.field and len(getattr(contents, name))
    ]
    if others:
        raise invalid(
            f"{field}: {datatype.name} data belongs in {datatype.field}, got {', '.join(others)}"
        )
    values = getattr(contents, datatype.field)
    count = _count(shape)
    if len(values) != count:
        raise invalid(
            f"{field}.{datatype.field}: expected {count} values for shape {shape}, "
            f"got {len(values)}"
        )
    wide = np.array(values, dtype=_wide(datatype.dtype))
    array = wide.astype(datatype.dtype)
    if datatype.dtype.kind in "iu" and wide.size and (array != wide).any():
        index = int(np.argmax(array != wide))
        info = np.iinfo(datatype.dtype)
        raise invalid(
            f"{field}.{datatype.field}[{index}]: {wide[index]} is out of range for "
            f"{datatype.name} ({info.min} to {info.max})"
        )
    return array.reshape(shape)


def _wide(dtype: np.dtype) -> np.dtype:
    """The dtype the typed field carries (int32 for INT8, say), so range checks see the value."""
    if dtype.kind == "i":
        return np.dtype(np.int64)
    if dtype.kind == "u":
        return np.dtype(np.uint64)
    return dtype


def encode(
    output: v2.ModelInferResponse.InferOutputTensor, array: np.ndarray, raw: bool
) -> bytes | None:
    """Fill one output's datatype and shape, and its data: typed in `output.contents`, or (raw)
    returned as the bytes for `raw_output_contents`."""
    datatype = datatype_of(array.dtype)
    output.datatype = datatype.name
    output.shape.extend(array.shape)
    if raw:
        return np.ascontiguousarray(array, datatype.wire).tobytes()
    getattr(output.contents, datatype.field).extend(array.ravel().tolist())  # type: ignore[arg-type]
    return None


def _count(shape: list[int]) -> int:
    count = 1
    for dim in shape:  # Python ints: no wrap-around for absurd shapes
        count *= dim
    return count
