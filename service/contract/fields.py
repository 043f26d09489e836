"""Typed reading of JSON values from a model file's metadata; every error names the key path.

The contract's records parse themselves with these (`BNStats.from_json`, ...), so a bad file is
refused with a message such as "foldserve.bn_stats[0].var[1]: -1.0 is not a finite number >= 0".
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any


class ContractError(ValueError):
    """Metadata that breaks the contract; the message names the key and what was expected."""


def json_object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ContractError(f"{where}: expected a JSON object, got {type(value).__name__}")
    return value


def get(entry: dict[str, Any], name: str, where: str) -> Any:
    if name not in entry:
        raise ContractError(f"{where}: {name!r} missing")
    return entry[name]


def text(entry: dict[str, Any], name: str, where: str) -> str:
    value = get(entry, name, where)
    if not isinstance(value, str):
        raise ContractError(f"{where}.{name}: expected a string, got {value!r}")
    return value


def choice(entry: dict[str, Any], name: str, choices: Sequence[str], where: str) -> str:
    value = text(entry, name, where)
    if value not in choices:
        raise ContractError(f"{where}.{name}: {value!r} is not one of {list(choices)}")
    return value


def flag(entry: dict[str, Any], name: str, where: str) -> bool:
    value = entry.get(name, False)
    if not isinstance(value, bool):
        raise ContractError(f"{where}.{name}: expected true or false, got {value!r}")
    return value


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def number(entry: dict[str, Any], name: str, where: str, minimum: float | None = None) -> float:
    value = get(entry, name, where)
    if not _is_number(value) or (minimum is not None and value < minimum):
        bound = "" if minimum is None else f" >= {minimum}"
        raise ContractError(f"{where}.{name}: expected a finite number{bound}, got {value!r}")
    return float(value)


def numbers(
    entry: dict[str, Any],
    name: str,
    where: str,
    length: int | None = None,
    minimum: float | None = None,
) -> tuple[float, ...]:
    values = get(entry, name, where)
    if not isinstance(values, list) or not values:
        raise ContractError(f"{where}.{name}: expected a non-empty list of numbers")
    if length is not None and len(values) != length:
        raise ContractError(f"{where}.{name}: {len(values)} values, expected {length}")
    # A long list (a shift reference's) at C speed; the loop below says what is wrong.
    plain = set(map(type, values)) <= {int, float} and all(map(math.isfinite, values))
    if plain and (minimum is None or min(values) >= minimum):
        return tuple(map(float, values))
    for index, value in enumerate(values):
        if not _is_number(value) or (minimum is not None and value < minimum):
            bound = "" if minimum is None else f" >= {minimum}"
            raise ContractError(f"{where}.{name}[{index}]: {value!r} is not a finite number{bound}")
    return tuple(float(v) for v in values)


def items(entry: dict[str, Any], name: str, where: str) -> list[tuple[str, dict[str, Any]]]:
    values = entry.get(name, [])
    if not isinstance(values, list):
        raise ContractError(f"{where}.{name}: expected a list")
    return [
        (f"{where}.{name}[{i}]", json_object(v, f"{where}.{name}[{i}]"))
        for i, v in enumerate(values)
    ]
