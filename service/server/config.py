"""Server settings: each has a `--flag` and a `FOLDSERVE_*` environment variable; flags win."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from service import defaults
from service.core.model_config import configured_name
from service.server.setting_types import (
    choice,
    non_negative_float,
    on_off,
    port,
    positive_float,
    positive_int,
    workers,
)


class ConfigError(ValueError):
    """A setting with an unusable value; the message names the flag and the variable."""


@dataclass(frozen=True)
class Setting:
    """One setting: its attribute name, default, parser, placeholder and help text."""

    name: str
    default: Any
    parse: Callable[[str], Any]
    metavar: str
    help: str

    @property
    def env(self) -> str:
        return "FOLDSERVE_" + self.name.upper()

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def shown_default(self) -> str:
        if isinstance(self.default, bool):
            return "on" if self.default else "off"
        return str(self.default)


SETTINGS = (
    Setting(
        "model",
        None,
        str,
        "PATH",
        "the model.onnx file to serve, or a model repository: a directory of numbered versions, "
        "DIR/<version>/model.onnx (required)",
    ),
    Setting(
        "model_name",
        defaults.MODEL_NAME,
        str,
        "NAME",
        "name the model is served under (default: the name in the model's config.json, if any)",
    ),
    Setting("host", defaults.HOST, str, "HOST", "address the gRPC server binds"),
    Setting("port", defaults.PORT, port, "PORT", "gRPC port (0: pick a free one, logged)"),
    Setting("metrics_port", defaults.METRICS_PORT, port, "PORT", "Prometheus /metrics HTTP port"),
    Setting(
        "max_message_bytes",
        defaults.MAX_MESSAGE_BYTES,
        positive_int,
        "BYTES",
        "largest request (and response) accepted",
    ),
    Setting(
        "max_concurrent_rpcs",
        defaults.MAX_CONCURRENT_RPCS,
        positive_int,
        "N",
        "calls (and open streams) served at once; more get RESOURCE_EXHAUSTED",
    ),
    Setting(
        "log_level",
        defaults.LOG_LEVEL,
        choice(defaults.LOG_LEVELS, str.upper),
        "LEVEL",
        ", ".join(defaults.LOG_LEVELS),
    ),
    Setting(
        "log_format",
        defaults.LOG_FORMAT,
        choice(defaults.LOG_FORMATS, str.lower),
        "FORMAT",
        "text, or json (one object per line)",
    ),
    Setting("reflection", defaults.REFLECTION, on_off, "on|off", "gRPC server reflection"),
    Setting(
        "workers",
        defaults.WORKERS,
        workers,
        "N|auto",
        "server processes sharing the port (auto: the CPUs this process may use)",
    ),
    Setting(
        "keep_versions",
        defaults.KEEP_VERSIONS,
        positive_int,
        "N",
        "how many of the newest valid versions stay loaded (clients may name one)",
    ),
    Setting(
        "poll_seconds",
        defaults.POLL_SECONDS,
        non_negative_float,
        "SECONDS",
        "how often to look for new model versions (0: only on SIGHUP)",
    ),
    Setting("tls_cert", None, str, "PATH", "server certificate chain (PEM): serve TLS"),
    Setting("tls_key", None, str, "PATH", "private key of --tls-cert (PEM)"),
    Setting(
        "tls_client_ca",
        None,
        str,
        "PATH",
        "CA certificates (PEM): require client certificates signed by them (mutual TLS)",
    ),
    Setting(
        "auth_token_file",
        None,
        str,
        "PATH",
        "a file holding the bearer token the prediction APIs require (or set "
        f"{defaults.AUTH_TOKEN_ENV}); health stays open",
    ),
    Setting("access_log", defaults.ACCESS_LOG, on_off, "on|off", "log one line per call"),
    Setting(
        "batching",
        defaults.BATCHING,
        on_off,
        "on|off",
        f"with {defaults.BATCH_MIN_IN_FLIGHT} or more calls in flight, run the examples that "
        "queue while the model runs together in its next run (never waits for company)",
    ),
    Setting(
        "shift_monitor",
        defaults.SHIFT_MONITOR,
        on_off,
        "on|off",
        "the covariate-shift monitor (models exported with taps and a calibration); off: "
        "predictions run the graph without its taps",
    ),
    Setting(
        "shift_check_every",
        defaults.SHIFT_CHECK_EVERY,
        positive_int,
        "N",
        "examples between two scorings of the monitor's state against its thresholds",
    ),
    Setting(
        "shift_margin",
        None,
        positive_float,
        "X",
        "layer thresholds are X times the clean replay's maximum (default: the model file's)",
    ),
    Setting(
        "shift_prior_margin",
        None,
        positive_float,
        "X",
        "the class-prior threshold is X times its clean maximum (default: the model file's)",
    ),
    Setting(
        "grace_seconds",
        defaults.GRACE_SECONDS,
        non_negative_float,
        "SECONDS",
        "on SIGTERM/SIGINT, how long calls in flight may take to finish",
    ),
    Setting(
        "drain_delay_seconds",
        defaults.DRAIN_DELAY_SECONDS,
        non_negative_float,
        "SECONDS",
        "on SIGTERM/SIGINT, keep serving this long with health NOT_SERVING before refusing new "
        "calls, so balancers stop sending first",
    ),
)


@dataclass(frozen=True)
class ServeConfig:
    """Resolved settings of `foldserve serve`."""

    model: str
    model_name: str = defaults.MODEL_NAME
    host: str = defaults.HOST
    port: int = defaults.PORT
    metrics_port: int = defaults.METRICS_PORT
    max_message_bytes: int = defaults.MAX_MESSAGE_BYTES
    max_concurrent_rpcs: int = defaults.MAX_CONCURRENT_RPCS
    log_level: str = defaults.LOG_LEVEL
    log_format: str = defaults.LOG_FORMAT
    reflection: bool = defaults.REFLECTION
    workers: int = 1
    keep_versions: int = defaults.KEEP_VERSIONS
    poll_seconds: float = defaults.POLL_SECONDS
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_client_ca: str | None = None
    auth_token_file: str | None = None
    access_log: bool = defaults.ACCESS_LOG
    batching: bool = defaults.BATCHING
    shift_monitor: bool = defaults.SHIFT_MONITOR
    shift_check_every: int = defaults.SHIFT_CHECK_EVERY
    shift_margin: float | None = None
    shift_prior_margin: float | None = None
    grace_seconds: float = defaults.GRACE_SECONDS
    drain_delay_seconds: float = defaults.DRAIN_DELAY_SECONDS
    # From the environment only (FOLDSERVE_AUTH_TOKEN); never shown.
    auth_token: str | None = field(default=None, repr=False)


def add_serve_arguments(
    parser: argparse.ArgumentParser, environ: Mapping[str, str] | None = None
) -> None:
    """Add one flag per setting; each defaults to None so `resolve` can tell "not given".

    `--model` is required unless FOLDSERVE_MODEL is set.
    """
    environ = os.environ if environ is None else environ
    for setting in SETTINGS:
        if setting.name == "model":
            shown = "required unless set" if not environ.get(setting.env) else "set"
            suffix = f"[env {setting.env}: {shown}]"
        elif setting.default is None:
            suffix = f"[env {setting.env}, default none]"
        else:
            suffix = f"[env {setting.env}, default {setting.shown_default}]"
        parser.add_argument(
            setting.flag,
            dest=setting.name,
            default=None,
            metavar=setting.metavar,
            required=setting.name == "model" and not environ.get(setting.env),
            help=f"{setting.help} {suffix}",
        )


def resolve(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> ServeConfig:
    """Combine flags, environment and defaults, in that order of precedence (the model name: a
    flag, the variable, the model's config.json, then the default).

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
            raw = setting.default
            if not isinstance(raw, str) or setting.name in ("model",):
                values[setting.name] = raw
                continue
        try:
            values[setting.name] = setting.parse(str(raw))
        except ValueError as exc:
            raise ConfigError(f"{source}: {exc}") from None
    if not values["model"]:
        raise ConfigError("no model to serve: pass --model PATH or set FOLDSERVE_MODEL")
    name_env = next(s for s in SETTINGS if s.name == "model_name").env
    if getattr(args, "model_name", None) is None and not environ.get(name_env):
        # Neither flag nor variable: the name in the model's config.json, if it gives one.
        values["model_name"] = configured_name(values["model"]) or values["model_name"]
    if bool(values["tls_cert"]) != bool(values["tls_key"]):
        raise ConfigError("--tls-cert and --tls-key go together: give both, or neither")
    if values["tls_client_ca"] and not values["tls_cert"]:
        raise ConfigError("--tls-client-ca (mutual TLS) needs --tls-cert and --tls-key")
    values["auth_token"] = environ.get(defaults.AUTH_TOKEN_ENV) or None
    return ServeConfig(**values)
