"""BYTES tensors in V2 REST JSON: each element a JSON string, which is Unicode text, so an
element is carried as the string's UTF-8 bytes (the binary tensor extension carries any bytes)."""

from __future__ import annotations

import json

import numpy as np

from foldserve.core.errors import invalid
from foldserve.core.strings import bytes_array


def string_values(values: list, shape: list[int], field: str) -> np.ndarray:
    """A BYTES tensor's JSON values (already flat, as many as `shape` holds) as an object array
    of their UTF-8 bytes.

    Raises:
        RequestError: INVALID_ARGUMENT for a value that is not a string, or a string UTF-8
            cannot hold (a lone surrogate, "\\ud800").
    """
    encoded: list[bytes] = []
    for index, value in enumerate(values):
        if type(value) is not str:
            shown = json.dumps(value)[:40]
            raise invalid(
                f"{field}: value {index} (row-major) is {shown}; expected a string (BYTES)"
            )
        try:
            encoded.append(value.encode("utf-8"))
        except UnicodeEncodeError as exc:
            raise invalid(
                f"{field}: value {index} (row-major) has a lone surrogate at character "
                f"{exc.start}, which UTF-8 cannot hold; send such bytes as binary data"
            ) from None
    return bytes_array(encoded, shape)


def json_strings(array: np.ndarray, name: str) -> list[str]:
    """A BYTES output's elements as JSON strings, flat, row-major.

    Raises:
        RequestError: INVALID_ARGUMENT for an element that is not UTF-8 text, which only binary
            data can carry (outputs of ONNX string tensors and classifications always are).
    """
    values = array.ravel().tolist()
    try:
        return [value.decode("utf-8") for value in values]
    except UnicodeDecodeError:
        index = next(i for i, v in enumerate(values) if not _is_utf8(v))
        raise invalid(
            f"outputs: element {index} of output {name!r} is not UTF-8 text, which JSON cannot "
            "carry; ask for the output as binary data (parameters.binary_data)"
        ) from None


def _is_utf8(value: bytes) -> bool:
    try:
        value.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True
