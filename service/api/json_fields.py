"""JSON request bodies read field by field: parsed strictly, each field checked for its JSON type,
every error INVALID_ARGUMENT naming the field ("inputs[0].shape[1]: expected an integer, got a
string"); and compact JSON replies."""

from __future__ import annotations

import json
from typing import Any

from foldserve.core.errors import invalid
from foldserve.core.types import Parameter


def load_json(text: bytes, what: str, after: str = "") -> Any:
    """`text` parsed as JSON (RFC 8259: no NaN or Infinity literals).

    Args:
        after: what the message adds when bytes follow the JSON value.

    Raises:
        RequestError: INVALID_ARGUMENT naming `what`, for anything that is not JSON.
    """
    try:
        return json.loads(text, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        if exc.msg == "Extra data":
            raise invalid(
                f"{what}: more after the JSON value (from character {exc.pos}){after}"
            ) from None
        raise invalid(f"{what}: not valid JSON ({_reason(exc)})") from None
    except (ValueError, RecursionError) as exc:
        raise invalid(f"{what}: not valid JSON ({_reason(exc)})") from None


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not a JSON number")


def _reason(exc: Exception) -> str:
    return "nested too deeply" if isinstance(exc, RecursionError) else str(exc)[:200]


def kind(value: Any) -> str:
    """How a JSON value is named in messages."""
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}
    names.update({list: "an array", dict: "an object", type(None): "null"})
    return names.get(type(value), type(value).__name__)


def expect(value: Any, types: type | tuple[type, ...], what: str, field: str) -> Any:
    """`value` when it is of `types` (a bool is no integer here).

    Raises:
        RequestError: INVALID_ARGUMENT naming `field`.
    """
    if isinstance(value, types) and not (isinstance(value, bool) and bool not in _tuple(types)):
        return value
    raise invalid(f"{field}: expected {what}, got {kind(value)}")


def _tuple(types: type | tuple[type, ...]) -> tuple[type, ...]:
    return types if isinstance(types, tuple) else (types,)


def parameters(value: Any, field: str) -> dict[str, Parameter]:
    """A V2 `parameters` object: string keys, string, number or boolean values."""
    expect(value, dict, "an object of parameters", field)
    for key, item in value.items():
        expect(item, (str, int, float, bool), "a string, number or boolean", f"{field}.{key}")
    return value


def dumps(value: Any) -> bytes:
    """Compact JSON bytes (a NaN or infinity in an output is written NaN, Infinity, -Infinity, as
    Python's and most JSON readers take them; ask for binary outputs for exact bytes)."""
    return json.dumps(value, separators=(",", ":")).encode()
