"""String tensors in the core, without a server: the BYTES raw layout both ways and every
malformed buffer, and UTF-8 toward and from onnxruntime."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from foldserve.core.datatypes import BY_NAME, datatype_of, decode_raw, encode_raw
from foldserve.core.errors import RequestError, Status
from foldserve.core.strings import bytes_array, from_onnx, onnx_strings

BYTES = BY_NAME["BYTES"]
FIELD = "raw_input_contents[0]"


def layout(*values: bytes) -> bytes:
    return b"".join(struct.pack("<I", len(v)) + v for v in values)


def refused(call, *args) -> str:
    with pytest.raises(RequestError) as caught:
        call(*args)
    assert caught.value.status == Status.INVALID_ARGUMENT
    return caught.value.message


def test_bytes_is_a_datatype_of_object_arrays() -> None:
    assert datatype_of(np.dtype(object)) is BYTES
    assert BYTES.dtype == np.dtype(object)


@pytest.mark.parametrize(
    "values",
    [[b"a", b"", b"\x00\xff binary", "é".encode()], [b""] * 6, [b"x" * 70_000] * 6],
    ids=["mixed", "empty-elements", "long"],
)
def test_raw_layout_round_trips(values: list[bytes]) -> None:
    shape = [2, len(values) // 2]
    array = decode_raw(layout(*values), BYTES, shape, FIELD)
    assert array.shape == tuple(shape) and array.dtype == object
    assert array.ravel().tolist() == values
    assert encode_raw(array) == layout(*values)


def test_an_empty_tensor_has_no_bytes() -> None:
    array = decode_raw(b"", BYTES, [0, 3], FIELD)
    assert array.shape == (0, 3)
    assert encode_raw(array) == b""


@pytest.mark.parametrize(
    ("data", "shape", "message"),
    [
        (b"\x02\x00", [1], "element 0 at byte 0: 2 byte(s) left, too few for its 4-byte"),
        (layout(b"ab") + b"\x01", [2], "element 1 at byte 6: 1 byte(s) left, too few"),
        (struct.pack("<I", 9) + b"abc", [1], "element 0 at byte 0: its length says 9 bytes, "
         "but 3 are left"),
        (layout(b"ab") + struct.pack("<I", 2**32 - 1), [2], "element 1 at byte 6: its length "
         "says 4294967295 bytes, but 0 are left"),
        (layout(b"a", b"b"), [3], "expected 3 BYTES element(s) for shape [3]"),
        (layout(b"a", b"b", b"c"), [2], "5 byte(s) left after the 2 BYTES element(s) of shape "
         "[2]"),
        (b"", [1], "expected 1 BYTES element(s) for shape [1]"),
        (layout(b"a"), [2**40], "expected 1099511627776 BYTES element(s)"),
    ],
    ids=["short-prefix", "short-second-prefix", "length-past-end", "huge-length", "too-few",
         "too-many", "nothing", "absurd-shape"],
)  # fmt: skip
def test_malformed_raw_layouts_name_the_field(data: bytes, shape: list[int], message: str) -> None:
    found = refused(decode_raw, data, BYTES, shape, FIELD)
    assert found.startswith(f"{FIELD}: ")
    assert message in found


def test_onnx_strings_decode_utf8_and_name_the_bad_element() -> None:
    data = bytes_array([b"ok", "naïve".encode(), b"a\x00b"], [3])
    texts = onnx_strings(data, "inputs[0]", "text")
    assert texts.tolist() == ["ok", "naïve", "a\x00b"]
    bad = bytes_array([b"ok", b"fine", b"\xc3("], [1, 3])
    message = refused(onnx_strings, bad, "inputs[2]", "text")
    assert message.startswith("inputs[2]: element 2 (row-major) is not valid UTF-8")
    assert "'text'" in message


def test_onnx_outputs_come_back_as_utf8_bytes() -> None:
    out = from_onnx(np.array([["é", ""], ["a", "b"]], dtype=object))
    assert out.shape == (2, 2)
    assert out.tolist() == [["é".encode(), b""], [b"a", b"b"]]
