"""How a setting is declared, and the value types of the server settings.

A setting is declared once, as a field of its command's settings dataclass: `setting(default,
parse, metavar, help)`. Its flag (`--name`), its environment variable (`FOLDSERVE_NAME`), its
`--help` line and its row in the docs' reference are all derived from that field (`declared`).
Each value type parses a flag's or a variable's text, or raises ValueError saying what was
expected.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ENV_PREFIX = "FOLDSERVE_"
_DECLARED = "foldserve.setting"


def setting(default: Any, parse: Callable[[str], Any], metavar: str, help: str) -> Any:
    """Declare a settings dataclass field: its default, how its text parses, its placeholder in
    `--help`, and what it does (`help`). A string default is parsed like any given value."""
    return dataclasses.field(default=default, metadata={_DECLARED: (parse, metavar, help)})


@dataclass(frozen=True)
class Setting:
    """One declared setting, as the command line, the environment and the docs see it."""

    name: str
    default: Any
    parse: Callable[[str], Any]
    metavar: str
    help: str
    command: str

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper()

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def shown_default(self) -> str:
        if isinstance(self.default, bool):
            return "on" if self.default else "off"
        if isinstance(self.default, tuple):
            return ",".join(self.default) or "none"
        return "none" if self.default is None else str(self.default)


def declared(settings_type: type, command: str) -> tuple[Setting, ...]:
    """The settings a dataclass declares with `setting`, in field order."""
    return tuple(
        Setting(f.name, f.default, *f.metadata[_DECLARED], command)
        for f in dataclasses.fields(settings_type)
        if _DECLARED in f.metadata
    )


def markdown_table(settings: tuple[Setting, ...]) -> str:
    """The settings as a Markdown table: flag, variable, default, what it does."""
    rows = ["| flag | environment variable | default | what it does |", "| --- | --- | --- | --- |"]
    for item in settings:
        value = f"{item.flag} {item.metavar}"
        help_text = item.help.replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")
        rows.append(f"| `{value}` | `{item.env}` | {item.shown_default} | {help_text} |")
    return "\n".join(rows) + "\n"


def integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a whole number") from None


def port(text: str) -> int:
    value = integer(text)
    if not 0 <= value <= 65535:
        raise ValueError(f"{value} is not a port number (0-65535; 0 picks a free port)")
    return value


def positive_int(text: str) -> int:
    value = integer(text)
    if value < 1:
        raise ValueError(f"{value} is not a positive integer")
    return value


def non_negative_int(text: str) -> int:
    value = integer(text)
    if value < 0:
        raise ValueError(f"{value} is not a whole number of 0 or more")
    return value


def non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a number") from None
    if not (value >= 0 and math.isfinite(value)):
        raise ValueError(f"{value} is not a finite non-negative number")
    return value


def available_cpus() -> int:
    """The CPUs this process may use: its affinity, capped by a cgroup v2 CPU quota (a
    container's `--cpus`, a Kubernetes CPU limit)."""
    count = len(os.sched_getaffinity(0))
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if quota != "max":
            count = min(count, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return count


def workers(text: str) -> int:
    if text.strip().lower() == "auto":
        return available_cpus()
    return positive_int(text)


def positive_float(text: str) -> float:
    value = non_negative_float(text)
    if value <= 0:
        raise ValueError(f"{value} is not a positive number")
    return value


def choice(choices: tuple[str, ...], fold: Callable[[str], str]) -> Callable[[str], str]:
    def parse(text: str) -> str:
        value = fold(text.strip())
        if value not in choices:
            raise ValueError(f"{text!r} is not one of {', '.join(choices)}")
        return value

    return parse


def names(text: str) -> tuple[str, ...]:
    """A comma-separated list of names (model names, say): "a,b" -> ("a", "b")."""
    found = tuple(name.strip() for name in text.split(",") if name.strip())
    bad = [name for name in found if "/" in name or name.startswith(".")]
    if bad:
        raise ValueError(f"{bad[0]!r} is not a model name")
    return found


def on_off(text: str) -> bool:
    value = text.strip().lower()
    if value in ("on", "true", "1", "yes"):
        return True
    if value in ("off", "false", "0", "no"):
        return False
    raise ValueError(f"{text!r} is not on or off")
