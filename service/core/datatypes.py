"""The tensor datatypes of the Open Inference Protocol (KServe V2), which every protocol served
here speaks: each name with its numpy dtype, and the protocol's raw binary layout of a tensor.

| V2 datatype | ONNX type |
| --- | --- |
| `BOOL` | `bool` |
| `INT8`, `INT16`, `INT32`, `INT64` | `int8`, `int16`, `int32`, `int64` |
| `UINT8`, `UINT16`, `UINT32`, `UINT64` | `uint8`, `uint16`, `uint32`, `uint64` |
| `FP16`, `FP32`, `FP64` | `float16`, `float`, `double` |
| `BYTES` | `string` |

Raw data (gRPC's `raw_input_contents` and `raw_output_contents`, REST's binary tensor extension)
is little-endian, row-major; BOOL is one byte per value, 0 or 1; BYTES is each element's 4-byte
length, then its bytes (`core.strings`, which also says how BYTES meets ONNX's UTF-8 strings).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from foldserve.core.errors import invalid
from foldserve.core.strings import decode_bytes, encode_bytes, is_strings


@dataclass(frozen=True)
class Datatype:
    """One V2 datatype: its name and numpy dtype."""

    name: str
    dtype: np.dtype

    @property
    def wire(self) -> np.dtype:
        """The little-endian dtype of its raw bytes."""
        return self.dtype.newbyteorder("<")


DATATYPES = tuple(
    Datatype(name, np.dtype(dtype))
    for name, dtype in (
        ("BOOL", np.bool_),
        ("INT8", np.int8),
        ("INT16", np.int16),
        ("INT32", np.int32),
        ("INT64", np.int64),
        ("UINT8", np.uint8),
        ("UINT16", np.uint16),
        ("UINT32", np.uint32),
        ("UINT64", np.uint64),
        ("FP16", np.float16),
        ("FP32", np.float32),
        ("FP64", np.float64),
        ("BYTES", np.object_),  # each value a `bytes` (`core.strings`)
    )
)
BY_NAME = {d.name: d for d in DATATYPES}
BY_DTYPE = {d.dtype: d for d in DATATYPES}


def datatype_of(dtype: np.dtype) -> Datatype:
    """The V2 datatype of a numpy dtype (one `core.graph.ONNX_TYPES` has)."""
    return BY_DTYPE[np.dtype(dtype)]


def named(name: str, field: str) -> Datatype:
    """The datatype a request names.

    Raises:
        RequestError: INVALID_ARGUMENT for a name that is not a V2 datatype served here.
    """
    found = BY_NAME.get(name)
    if found is None:
        raise invalid(f"{field}: unknown datatype {name!r}; expected one of {', '.join(BY_NAME)}")
    return found


def element_count(shape: Sequence[int]) -> int:
    """Values in a tensor of `shape` (Python ints: no wrap-around for absurd shapes)."""
    count = 1
    for dim in shape:
        count *= dim
    return count


def check_shape(shape: Sequence[int], field: str) -> list[int]:
    """A request's shape as a list, every dimension >= 0.

    Raises:
        RequestError: INVALID_ARGUMENT for a negative dimension.
    """
    dims = [int(d) for d in shape]
    if any(d < 0 for d in dims):
        raise invalid(f"{field}: {dims} has a negative dimension")
    return dims


def decode_raw(data: bytes, datatype: Datatype, shape: list[int], field: str) -> np.ndarray:
    """One tensor's raw bytes as an array of `shape`.

    Raises:
        RequestError: INVALID_ARGUMENT for a byte count that does not fit, a BOOL byte that
            is not 0 or 1, or BYTES lengths that do not add up (`strings.decode_bytes`).
    """
    count = element_count(shape)
    if is_strings(datatype.dtype):
        return decode_bytes(data, count, shape, field)
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


def encode_raw(array: np.ndarray) -> bytes:
    """An array's raw bytes (little-endian, row-major; BYTES: `strings.encode_bytes`)."""
    if is_strings(array.dtype):
        return encode_bytes(array)
    return np.ascontiguousarray(array, datatype_of(array.dtype).wire).tobytes()
