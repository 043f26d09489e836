"""Run `foldserve serve` as a real subprocess and learn its ports from its startup log line."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
READY = re.compile(r"grpc_port=(\d+) http_port=(\d+) metrics_port=(\d+|None)")


@dataclass
class ServerProcess:
    process: subprocess.Popen
    log: Path
    port: int = 0
    http_port: int = 0
    metrics_port: int = 0

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stderr(self) -> str:
        return self.log.read_text(errors="replace")

    def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM, then wait for the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)


def foldserve_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "foldserve.cli", *args]


def env(**extra: str) -> dict[str, str]:
    result = {k: v for k, v in os.environ.items() if not k.startswith("FOLDSERVE_")}
    result.update(PYTHONUNBUFFERED="1", **extra)
    return result


@contextmanager
def server_process(
    model: Path | str,
    tmp: Path,
    args: Sequence[str] = (),
    timeout: float = 30.0,
    extra_env: dict[str, str] | None = None,
    source: str = "--model",
) -> Iterator[ServerProcess]:
    """Start `foldserve serve --model MODEL --host 127.0.0.1 --port 0 --metrics-port 0 ARGS`
    (one worker unless ARGS say `--workers`; `source="--model-repository"`: MODEL is a
    repository of models)."""
    log = tmp / f"server-{time.monotonic_ns()}.log"
    workers = () if "--workers" in args else ("--workers", "1")
    command = foldserve_command(
        "serve", source, str(model), "--host", "127.0.0.1", "--port", "0",
        "--http-port", "0", "--metrics-port", "0", *workers, *args,
    )  # fmt: skip
    with log.open("w") as sink:
        process = subprocess.Popen(
            command, cwd=REPO, env=env(**(extra_env or {})), stdout=sink, stderr=sink
        )
    server = ServerProcess(process, log)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = READY.search(server.stderr())
            if match:
                server.port = int(match.group(1))
                server.http_port = int(match.group(2))
                server.metrics_port = int(match.group(3)) if match.group(3) != "None" else 0
                break
            if process.poll() is not None:
                raise AssertionError(f"server exited {process.returncode}:\n{server.stderr()}")
            time.sleep(0.05)
        else:
            raise AssertionError(f"server did not start in {timeout} s:\n{server.stderr()}")
        yield server
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
