"""The value types of the server settings: each parses a flag's or a variable's text, or raises
ValueError saying what was expected."""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path


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


def on_off(text: str) -> bool:
    value = text.strip().lower()
    if value in ("on", "true", "1", "yes"):
        return True
    if value in ("off", "false", "0", "no"):
        return False
    raise ValueError(f"{text!r} is not on or off")
