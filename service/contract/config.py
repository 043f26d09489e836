"""The optional config file next to a model file: `config.json`, and the only home of its keys.

For a model foldserve did not train (no foldserve metadata), this file says what the graph
cannot: the name it is served under, its version and its class labels. It is optional, for any
model file:

| key | value | used |
| --- | --- | --- |
| `name` | string | the served model name, unless `--model-name` (or its variable) is given |
| `version` | string | the version of a single model file (a repository's are its directories) |
| `class_labels` | list of strings | `Predict`'s class names, position = class index |

e.g. `{"name": "iris", "version": "3", "class_labels": ["setosa", "versicolor", "virginica"]}`.
Every key is optional; an unknown key, or a value of the wrong type, is an error naming the key.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields, replace
from typing import Any

from foldserve.contract.fields import ContractError

CONFIG_FILE = "config.json"
NAME = "name"
VERSION = "version"
CLASS_LABELS = "class_labels"
CONFIG_KEYS = (NAME, VERSION, CLASS_LABELS)


@dataclass(frozen=True)
class ModelConfig:
    """What a config file says; None: the key is absent."""

    name: str | None = None
    version: str | None = None
    class_labels: tuple[str, ...] | None = None

    def present(self) -> tuple[str, ...]:
        """The keys the file gave."""
        return tuple(f.name for f in fields(self) if getattr(self, f.name) is not None)

    def over(self, shared: ModelConfig) -> ModelConfig:
        """This config, with what it leaves out taken from `shared` (key by key)."""
        return replace(shared, **{key: getattr(self, key) for key in self.present()})


def parse_config(text: str) -> ModelConfig:
    """Parse the text of a config file.

    Raises:
        ContractError: not JSON, not an object, an unknown key or a value of the wrong type; the
            message names the key.
    """
    try:
        value: Any = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ContractError(f"not valid JSON ({exc})") from None
    if not isinstance(value, dict):
        raise ContractError(f"expected a JSON object, got {type(value).__name__}")
    unknown = sorted(set(value) - set(CONFIG_KEYS))
    if unknown:
        raise ContractError(f"unknown key {unknown[0]!r}; the keys are {list(CONFIG_KEYS)}")
    found: dict[str, Any] = {}
    for key in (NAME, VERSION):
        if key in value:
            if not isinstance(value[key], str) or not value[key]:
                raise ContractError(f"{key}: expected a non-empty string, got {value[key]!r}")
            found[key] = value[key]
    if CLASS_LABELS in value:
        labels = value[CLASS_LABELS]
        if (
            not isinstance(labels, list)
            or not labels
            or not all(isinstance(x, str) for x in labels)
        ):
            raise ContractError(f"{CLASS_LABELS}: expected a non-empty list of strings")
        found[CLASS_LABELS] = tuple(labels)
    return ModelConfig(**found)
