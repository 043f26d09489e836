"""String tensors: the V2 datatype BYTES, ONNX's `tensor(string)`.

Inside the server a BYTES tensor is a numpy object array of `bytes`, whatever protocol carried
it. A V2 BYTES element is any bytes; an ONNX string is UTF-8 text, so an element given to a
string input must be valid UTF-8 (`onnx_strings`: INVALID_ARGUMENT naming the element
otherwise), and onnxruntime's `str` outputs come back as their UTF-8 bytes (`from_onnx`).

Raw layout (gRPC's `raw_input_contents` and `raw_output_contents`, REST's binary tensor
extension), as Triton has it: each element in row-major order is a 4-byte little-endian unsigned
length followed by that many bytes, with nothing between or after the elements.
"""

from __future__ import annotations

import struct

import numpy as np

from foldserve.core.errors import invalid

LENGTH = struct.Struct("<I")  # each element's length prefix
SHOWN_BYTES = 16  # how much of a bad element an error message shows


def bytes_array(values: list[bytes], shape: list[int]) -> np.ndarray:
    """An object array of `shape` holding `values` (row-major; `len(values)` must fit)."""
    array = np.empty(len(values), dtype=object)
    array[:] = values
    return array.reshape(shape)


def decode_bytes(data: bytes, count: int, shape: list[int], field: str) -> np.ndarray:
    """A BYTES tensor's raw bytes (`count` elements, for `shape`) as an object array of bytes.

    Every length prefix is checked against the bytes left; parsing stops at the buffer's end or
    once `count` elements are read, so a wrong shape costs no more than the buffer.

    Raises:
        RequestError: INVALID_ARGUMENT naming `field`: a length prefix cut short, a length past
            the end of the buffer, more or fewer elements than the shape holds.
    """
    values: list[bytes] = []
    offset, size = 0, len(data)
    while offset < size:
        index = len(values)
        if index == count:
            raise invalid(
                f"{field}: {size - offset} byte(s) left after the {count} BYTES element(s) of "
                f"shape {shape} (each a 4-byte little-endian length, then that many bytes)"
            )
        if size - offset < LENGTH.size:
            raise invalid(
                f"{field}: element {index} at byte {offset}: {size - offset} byte(s) left, too "
                f"few for its 4-byte little-endian length"
            )
        (length,) = LENGTH.unpack_from(data, offset)
        offset += LENGTH.size
        if length > size - offset:
            raise invalid(
                f"{field}: element {index} at byte {offset - LENGTH.size}: its length says "
                f"{length} bytes, but {size - offset} are left"
            )
        values.append(bytes(data[offset : offset + length]))
        offset += length
    if len(values) != count:
        raise invalid(
            f"{field}: expected {count} BYTES element(s) for shape {shape} (each a 4-byte "
            f"little-endian length, then that many bytes), got {len(values)}"
        )
    return bytes_array(values, shape)


def encode_bytes(array: np.ndarray) -> bytes:
    """A BYTES tensor's raw bytes: each element, row-major, after its 4-byte length."""
    pack = LENGTH.pack
    return b"".join(pack(len(value)) + value for value in array.ravel().tolist())


def onnx_strings(data: np.ndarray, field: str, name: str) -> np.ndarray:
    """A BYTES input as onnxruntime takes a string tensor: an object array of `str`.

    onnxruntime would turn a `bytes` element into the text "b'...'", so every element is
    decoded here.

    Raises:
        RequestError: INVALID_ARGUMENT naming the first element that is not valid UTF-8.
    """
    flat = data.ravel().tolist()
    texts = np.empty(len(flat), dtype=object)
    for index, value in enumerate(flat):
        try:
            texts[index] = value.decode("utf-8")
        except UnicodeDecodeError as exc:
            shown = value[:SHOWN_BYTES] + (b"..." if len(value) > SHOWN_BYTES else b"")
            raise invalid(
                f"{field}: element {index} (row-major) is not valid UTF-8 ({exc.reason} at byte "
                f"{exc.start}: {shown!r}); input {name!r} is an ONNX string tensor, which holds "
                "UTF-8 text"
            ) from None
    return texts.reshape(data.shape)


def from_onnx(array: np.ndarray) -> np.ndarray:
    """onnxruntime's string output (an object array of `str`) as an object array of bytes."""
    values = [value.encode("utf-8") for value in array.ravel().tolist()]
    return bytes_array(values, list(array.shape))


def is_strings(dtype: np.dtype) -> bool:
    """Whether a tensor of `dtype` is a string tensor (BYTES)."""
    return dtype == np.dtype(object)
