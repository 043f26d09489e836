"""The settings of `foldserve serve`, each declared once, as a field of `ServeConfig`.

Every setting has a `--flag` and a `FOLDSERVE_*` environment variable (flags win), a line in
`foldserve serve --help` and a row in docs/reference/settings.md (`settings_markdown`; a test
keeps that file in step), all derived from its declaration.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from foldserve.contract.layout import MODEL_NAME
from foldserve.core.access import AUTH_TOKEN_ENV
from foldserve.core.model_config import configured_name
from foldserve.core.repository_settings import MODES
from foldserve.core.shift.settings import SHIFT_CHECK_EVERY, SHIFT_MONITOR
from foldserve.server import setting_types as kind
from foldserve.server.event_loop import EVENT_LOOPS
from foldserve.server.setting_types import available_cpus, declared, markdown_table, setting

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
LOG_FORMATS = ("text", "json")


class ConfigError(ValueError):
    """A setting with an unusable value; the message names the flag and the variable."""


@dataclass(frozen=True)
class ServeConfig:
    """The settings of `foldserve serve` (a field without `setting` is not a flag)."""

    model: str | None = setting(
        None,
        str,
        "PATH",
        "one model to serve: a model.onnx file, or a directory of numbered versions, "
        "DIR/<version>/model.onnx (this or --model-repository)",
    )
    model_name: str = setting(
        MODEL_NAME,
        str,
        "NAME",
        "the name --model is served under (default: the name in its config.json, if any)",
    )
    model_repository: str | None = setting(
        None,
        str,
        "DIR",
        "many models to serve, Triton's layout: DIR/<model>/<version>/model.onnx (this or --model)",
    )
    model_control_mode: str = setting(
        "none",
        kind.choice(MODES, str.lower),
        "MODE",
        "which models of --model-repository load: none (all, at start), poll (as they come and "
        "go), explicit (--load-model and clients' RepositoryModelLoad)",
    )
    load_model: tuple[str, ...] = setting(
        (),
        kind.names,
        "NAME,...",
        "with --model-control-mode explicit: the models to load at start",
    )
    default_model: str | None = setting(
        None,
        str,
        "NAME",
        "the model that answers requests naming none (default: the only one, if one)",
    )
    host: str = setting("0.0.0.0", str, "HOST", "address the gRPC and HTTP servers bind")
    port: int = setting(50051, kind.port, "PORT", "gRPC port (0: pick a free one, logged)")
    http_port: int = setting(
        8000, kind.port, "PORT", "HTTP/REST port, the V2 protocol (0: pick a free one, logged)"
    )
    metrics_port: int = setting(9100, kind.port, "PORT", "Prometheus /metrics HTTP port")
    max_message_bytes: int = setting(
        4 * 1024 * 1024, kind.positive_int, "BYTES", "largest request (and response) accepted"
    )
    max_concurrent_rpcs: int = setting(
        64,
        kind.positive_int,
        "N",
        "calls (and open streams) served at once; more get RESOURCE_EXHAUSTED",
    )
    max_connections: int = setting(
        1024,
        kind.positive_int,
        "N",
        "open connections each worker holds on each port (gRPC, HTTP); one more is closed as "
        "it is accepted, so idle or hostile clients cannot grow memory without bound",
    )
    log_level: str = setting(
        "INFO", kind.choice(LOG_LEVELS, str.upper), "LEVEL", ", ".join(LOG_LEVELS)
    )
    log_format: str = setting(
        "text", kind.choice(LOG_FORMATS, str.lower), "FORMAT", "text, or json (one object per line)"
    )
    reflection: bool = setting(True, kind.on_off, "on|off", "gRPC server reflection")
    event_loop: str = setting(
        "uvloop",
        kind.choice(EVENT_LOOPS, str.lower),
        "LOOP",
        "the serving event loop: uvloop (asyncio's where uvloop is not installed), or asyncio",
    )
    workers: int | str = setting(
        "auto",
        kind.workers,
        "N|auto",
        "server processes sharing the port (auto: the CPUs this process may use)",
    )
    keep_versions: int = setting(
        2,
        kind.positive_int,
        "N",
        "how many of the newest valid versions stay loaded (clients may name one); a model's "
        "config.pbtxt version_policy replaces it for that model",
    )
    poll_seconds: float = setting(
        10.0,
        kind.non_negative_float,
        "SECONDS",
        "how often to look for new model versions (0: only on SIGHUP)",
    )
    tls_cert: str | None = setting(None, str, "PATH", "server certificate chain (PEM): serve TLS")
    tls_key: str | None = setting(None, str, "PATH", "private key of --tls-cert (PEM)")
    tls_client_ca: str | None = setting(
        None,
        str,
        "PATH",
        "CA certificates (PEM): require client certificates signed by them (mutual TLS)",
    )
    auth_token_file: str | None = setting(
        None,
        str,
        "PATH",
        "a file holding the bearer token the prediction APIs require, one a line: any is "
        f"accepted (or set {AUTH_TOKEN_ENV}); health stays open",
    )
    credentials_poll_seconds: float = setting(
        2.0,
        kind.non_negative_float,
        "SECONDS",
        "how often to look for new --tls-* and --auth-token-file files, served without a "
        "restart (0: only on SIGHUP)",
    )
    access_log: bool = setting(False, kind.on_off, "on|off", "log one line per call")
    shared_memory: bool = setting(
        False,
        kind.on_off,
        "on|off",
        "Triton's system shared memory extension: clients on this host pass tensors in POSIX "
        "shared memory regions they register (each worker process keeps its own regions)",
    )
    shift_monitor: bool = setting(
        SHIFT_MONITOR,
        kind.on_off,
        "on|off",
        "the covariate-shift monitor of each model that has a shift reference (foldserve's "
        "exports; `foldserve calibrate` writes one for any model); off: predictions run the "
        "graph without its taps",
    )
    shift_check_every: int = setting(
        SHIFT_CHECK_EVERY,
        kind.positive_int,
        "N",
        "examples each process keeps before folding them into the monitor's state (an alarm is "
        "placed at its exact example whatever N is; N bounds how stale a snapshot is)",
    )
    shift_arl: float | None = setting(
        None,
        kind.positive_float,
        "EXAMPLES",
        "the stated average run length between false alarms of each model's shift monitor, in "
        "examples (default: the one its reference records, 1e6 for foldserve's exports)",
    )
    adapt_reservoir: int = setting(
        0,
        kind.non_negative_int,
        "N",
        "keep each adaptable model's last N inputs in memory (N x one example as float32) to "
        "build a candidate version adapted to them (docs/guides/adapt.md); 0: no input is kept",
    )
    adapt_on_alarm: bool = setting(
        True,
        kind.on_off,
        "on|off",
        "with --adapt-reservoir, build a candidate version when the default version's shift "
        "monitor alarms (once N inputs have arrived after the alarm); off: only on request",
    )
    grace_seconds: float = setting(
        10.0,
        kind.non_negative_float,
        "SECONDS",
        "on SIGTERM/SIGINT, how long calls in flight may take to finish",
    )
    drain_delay_seconds: float = setting(
        0.0,
        kind.non_negative_float,
        "SECONDS",
        "on SIGTERM/SIGINT, keep serving this long with health NOT_SERVING before refusing new "
        "calls, so balancers stop sending first",
    )
    # From the environment only (FOLDSERVE_AUTH_TOKEN); never shown.
    auth_token: str | None = field(default=None, repr=False)
    # Set by the supervisor for each of its workers (which serve with `workers` 1): how many
    # processes serve together, ModelConfig's instance count. 0: `worker_count`.
    instances: int = field(default=0, repr=False)

    @property
    def worker_count(self) -> int:
        """How many server processes: `workers`, with "auto" read as the CPUs available."""
        return available_cpus() if self.workers == "auto" else int(self.workers)


SETTINGS = declared(ServeConfig, "serve")
# What other parts take as the server's defaults.
PORT = ServeConfig.port
HTTP_PORT = ServeConfig.http_port
MAX_MESSAGE_BYTES = ServeConfig.max_message_bytes
MAX_CONCURRENT_RPCS = ServeConfig.max_concurrent_rpcs


def settings_markdown() -> str:
    """The reference table of every `foldserve serve` setting (docs/reference/settings.md)."""
    return markdown_table(SETTINGS)


def add_serve_arguments(
    parser: argparse.ArgumentParser, environ: Mapping[str, str] | None = None
) -> None:
    """Add one flag per setting; each defaults to None so `resolve` can tell "not given"."""
    for item in SETTINGS:
        if item.default is None:
            suffix = f"[env {item.env}, default none]"
        else:
            suffix = f"[env {item.env}, default {item.shown_default}]"
        parser.add_argument(
            item.flag,
            dest=item.name,
            default=None,
            metavar=item.metavar,
            help=f"{item.help} {suffix}",
        )


def resolve(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> ServeConfig:
    """Combine flags, environment and defaults, in that order of precedence (the model name: a
    flag, the variable, the model's config.json, then the default).

    Raises:
        ConfigError: a value that does not parse, or no model given.
    """
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for item in SETTINGS:
        raw = getattr(args, item.name, None)
        source = item.flag
        if raw is None:
            raw = environ.get(item.env)
            source = item.env
        if raw is None or raw == "":
            raw = item.default
            if not isinstance(raw, str) or item.name in ("model", "model_repository"):
                values[item.name] = raw
                continue
        try:
            values[item.name] = item.parse(str(raw))
        except ValueError as exc:
            raise ConfigError(f"{source}: {exc}") from None
    if bool(values["model"]) == bool(values["model_repository"]):
        raise ConfigError(
            "what to serve: pass --model PATH (one model) or --model-repository DIR (many), "
            "or set FOLDSERVE_MODEL or FOLDSERVE_MODEL_REPOSITORY; exactly one of them"
        )
    if values["load_model"] and values["model_control_mode"] != "explicit":
        raise ConfigError("--load-model goes with --model-control-mode explicit")
    name_env = next(s for s in SETTINGS if s.name == "model_name").env
    if values["model"] and getattr(args, "model_name", None) is None and not environ.get(name_env):
        # Neither flag nor variable: the name in the model's config.json, if it gives one.
        values["model_name"] = configured_name(values["model"]) or values["model_name"]
    if bool(values["tls_cert"]) != bool(values["tls_key"]):
        raise ConfigError("--tls-cert and --tls-key go together: give both, or neither")
    if values["tls_client_ca"] and not values["tls_cert"]:
        raise ConfigError("--tls-client-ca (mutual TLS) needs --tls-cert and --tls-key")
    values["auth_token"] = environ.get(AUTH_TOKEN_ENV) or None
    return ServeConfig(**values)
