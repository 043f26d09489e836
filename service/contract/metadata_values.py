"""Decoding the JSON values of a model file's metadata keys, with errors naming the key."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from foldserve.contract.fields import ContractError


def decode(properties: Mapping[str, str], key: str, kind: type) -> Any:
    """The JSON value of `key`, which must be a `kind` (list or dict)."""
    try:
        value = json.loads(properties[key])
    except json.JSONDecodeError as exc:
        raise ContractError(f"metadata {key} is not valid JSON ({exc})") from None
    if not isinstance(value, kind):
        raise ContractError(
            f"metadata {key} must be a JSON {kind.__name__}, got {type(value).__name__}"
        )
    return value


def shape(values: list[Any], key: str) -> tuple[int, ...]:
    if not values or not all(type(d) is int and d > 0 for d in values):
        raise ContractError(f"{key} must be a list of positive integers, got {values}")
    return tuple(values)


def class_labels(values: list[Any], key: str) -> tuple[str, ...]:
    if not values:
        raise ContractError(f"{key} is empty")
    return tuple(str(label) for label in values)


def legacy_fold_report(report: dict[str, Any]) -> dict[str, Any]:
    """foldserve 0.1.0 spelled the report's `layer`/`folded_into` as `bn`/`into`."""
    renamed = {"bn": "layer", "into": "folded_into"}
    return {
        part: [
            {renamed.get(k, k): v for k, v in item.items()} if isinstance(item, dict) else item
            for item in items
        ]
        if isinstance(items, list)
        else items
        for part, items in report.items()
    }
