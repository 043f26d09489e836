"""Server settings: each has a `--flag` and a `FOLDSERVE_*` environment variable; flags win."""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
LOG_FORMATS = ("text", "json")


class ConfigError(ValueError):
    """A setting with an unusable value; the message names the flag and the variable."""


@dataclass(frozen=True)
class Setting:
    """One setting: its attribute name, default, parser and help text."""

    name: str
    default: Any
    parse: Callable[[str], Any]
    help: str

    @property
    def env(self) -> str:
        return "FOLDSERVE_" + self.name.upper()

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise ValueError(f"{value} is not a port number (0-65535; 0 picks a free port)")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError(f"{value} is not a positive integer")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not (value >= 0 and math.isfinite(value)):
        raise ValueError(f"{value} is not a finite non-negative number")
    return value


def _choice(choices: tuple[str, ...], fold: Callable[[str], str]) -> Callable[[str], str]:
    def parse(text: str) -> str:
        value = fold(text.strip())
        if value not in choices:
            raise ValueError(f"{text!r} is not one of {', '.join(choices)}")
        return value

    return parse


def _on_off(text: str) -> bool:
    value = text.strip().lower()
    if value in ("on", "true", "1", "yes"):
        return True
    if value in ("off", "false", "0", "no"):
        return False
    raise ValueError(f"{text!r} is not on or off")


SETTINGS = (
    Setting("model", None, str, "path of the model.onnx file to serve (required)"),
    Setting("model_name", "foldserve", str, "name the model is served under"),
    Setting("host", "0.0.0.0", str, "address the gRPC server binds"),
    Setting("port", 50051, _port, "gRPC port (0: pick a free one, logged at start)"),
    Setting("metrics_port", 9100, _port, "Prometheus /metrics HTTP port (0: pick a free one)"),
    Setting("max_message_bytes", 4 * 1024 * 1024, _positive_int, "largest request accepted"),
    Setting(
        "max_concurrent_rpcs",
        64,
        _positive_int,
        "calls (and open streams) served at once; more get RESOURCE_EXHAUSTED",
    ),
    Setting("log_level", "INFO", _choice(LOG_LEVELS, str.upper), "DEBUG, INFO, WARNING, ERROR"),
    Setting("log_format", "text", _choice(LOG_FORMATS, str.lower), "text or json (one per line)"),
    Setting("reflection", True, _on_off, "gRPC server reflection, on or off"),
    Setting(
        "grace_seconds",
        10.0,
        _non_negative_float,
        "on SIGTERM/SIGINT, how long calls in flight may take to finish",
    ),
)


@dataclass(frozen=True)
class ServeConfig:
    """Resolved settings of `foldserve serve`."""

    model: str
    model_name: str = "foldserve"
    host: str = "0.0.0.0"
    port: int = 50051
    metrics_port: int = 9100
    max_message_bytes: int = 4 * 1024 * 1024
    max_concurrent_rpcs: int = 64
    log_level: str = "INFO"
    log_format: str = "text"
    reflection: bool = True
    grace_seconds: float = 10.0


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """Add one flag per setting; each defaults to None so `resolve` can tell "not given"."""
    for setting in SETTINGS:
        parser.add_argument(
            setting.flag,
            dest=setting.name,
            default=None,
            metavar=setting.env,
            help=f"{setting.help} [env {setting.env}, default {setting.default}]",
        )


def resolve(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> ServeConfig:
    """Combine flags, environment and defaults, in that order of precedence.

    Raises:
        ConfigError: a value that does not parse, or no model given.
    """
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for setting in SETTINGS:
        raw = getattr(args, setting.name, None)
        source = setting.flag
        if raw is None:
            raw = environ.get(setting.env)
            source = setting.env
        if raw is None or raw == "":
            values[setting.name] = setting.default
            continue
        try:
            values[setting.name] = setting.parse(str(raw))
        except ValueError as exc:
            raise ConfigError(f"{source}: {exc}") from None
    if not values["model"]:
        raise ConfigError("no model to serve: pass --model PATH or set FOLDSERVE_MODEL")
    return ServeConfig(**values)
