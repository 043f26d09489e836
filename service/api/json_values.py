"""A V2 REST tensor's JSON `data` as numpy: a JSON array, flat or nested, read in row-major order,
whose values must be JSON values of the datatype: `true`/`false` for BOOL, integers in range for
INT*/UINT*, numbers for FP16/FP32/FP64, strings for BYTES (`api/json_strings.py`)."""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from foldserve.api.json_fields import expect
from foldserve.api.json_strings import string_values
from foldserve.core.datatypes import Datatype, element_count
from foldserve.core.errors import invalid


def json_values(data: Any, datatype: Datatype, shape: list[int], field: str) -> np.ndarray:
    """A tensor's JSON `data` (flat or nested, row-major) as an array of `shape`.

    Raises:
        RequestError: INVALID_ARGUMENT for data that is no array, a wrong count, a value of the
            wrong JSON type or out of the datatype's range.
    """
    expect(data, list, f"an array of {datatype.name} values", field)
    values = _flatten(data)
    count = element_count(shape)
    if len(values) != count:
        raise invalid(
            f"{field}: expected {count} values for shape {shape} (row-major, flat or nested), "
            f"got {len(values)}"
        )
    dtype = datatype.dtype
    if datatype.name == "BYTES":
        return string_values(values, shape, field)
    if dtype.kind == "b":
        _check_each(values, lambda v: type(v) is bool, "true or false", field)
        return np.array(values, dtype=dtype).reshape(shape)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        low, high = int(info.min), int(info.max)
        wanted = f"an integer from {low} to {high} ({datatype.name})"
        _check_each(values, lambda v: type(v) is int and low <= v <= high, wanted, field)
        return np.array(values, dtype=dtype).reshape(shape)
    return _floats(values, datatype, field).reshape(shape)


def _flatten(data: list) -> list:
    """Nested arrays' values in row-major order (without recursion: nesting may be deep)."""
    if not any(type(value) is list for value in data):
        return data
    flat: list = []
    stack = [iter(data)]
    while stack:
        for value in stack[-1]:
            if type(value) is list:
                stack.append(iter(value))
                break
            flat.append(value)
        else:
            stack.pop()
    return flat


def _check_each(values: list, fits: Any, wanted: str, field: str) -> None:
    bad = next((i for i, value in enumerate(values) if not fits(value)), None)
    if bad is not None:
        value = values[bad]
        shown = (str(value) if type(value) is int else json.dumps(value))[:40]
        raise invalid(f"{field}: value {bad} (row-major) is {shown}; expected {wanted}")


def _floats(values: list, datatype: Datatype, field: str) -> np.ndarray:
    top = float(np.finfo(datatype.dtype).max)
    wanted = f"a number from {-top:g} to {top:g} ({datatype.name})"
    # Python compares a huge JSON integer with a float exactly: no overflow on the way.
    _check_each(values, lambda v: type(v) in (int, float) and not abs(v) > top, wanted, field)
    return np.array(values, dtype=np.float64).astype(datatype.dtype)
