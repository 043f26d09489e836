"""What every row shares: a real `foldserve serve` subprocess, the request the load sends, and a
row of the table with its bound and verdict."""

from __future__ import annotations

import re
import sys
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from foldserve._proto.inference import grpc_predict_v2_pb2 as v2
from foldserve.bench.chaos.procs import rss_mb
from foldserve.bench.soak import started_server
from foldserve.contract.layout import MODEL_NAME

METRICS_PORT = re.compile(r"metrics_port=(\d+)")


@dataclass
class Serving:
    """A running server: its supervisor process, ports and log."""

    process: object  # subprocess.Popen
    grpc_port: int
    http_port: int
    metrics_port: int
    log: Path

    def target(self, protocol: str) -> str:
        return f"127.0.0.1:{self.grpc_port if protocol == 'grpc' else self.http_port}"

    @property
    def pid(self) -> int:
        return self.process.pid  # type: ignore[attr-defined]

    def rss_mb(self) -> float:
        """Resident memory of the supervisor and its workers together."""
        return rss_mb(self.pid)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


@contextmanager
def serve(flags: Sequence[str], workdir: Path, name: str = "server") -> Iterator[Serving]:
    """`foldserve serve FLAGS` on free ports of 127.0.0.1, killed at the end if still running."""
    command = [
        sys.executable, "-m", "foldserve.cli", "serve", "--host", "127.0.0.1", "--port", "0",
        "--http-port", "0", "--metrics-port", "0", *flags,
    ]  # fmt: skip
    log = workdir / f"{name}.log"
    with started_server(command, log) as ((grpc_port, http_port), process):
        metrics = METRICS_PORT.search(log.read_text())
        yield Serving(process, grpc_port, http_port, int(metrics.group(1)) if metrics else 0, log)


def infer_request(model: Path, name: str = MODEL_NAME) -> v2.ModelInferRequest:
    """A one-example raw ModelInfer request of `name` shaped for `model`'s input."""
    from foldserve.core.loading import load_model

    spec = load_model(model).require_classifier()
    batch = np.random.default_rng(0).uniform(0, 16, (1, *spec.example_shape)).astype(np.float32)
    tensor = v2.ModelInferRequest.InferInputTensor(
        name=spec.input.name, datatype="FP32", shape=batch.shape
    )
    return v2.ModelInferRequest(
        model_name=name, inputs=[tensor], raw_input_contents=[batch.tobytes()]
    )


@dataclass
class Row:
    """One fault's line of the table."""

    fault: str
    bound: str
    passed: bool
    calls: Counter = field(default_factory=Counter)
    saw: str = ""
    recovery: str = ""
    rss: tuple[float, float] = (float("nan"), float("nan"))
    skipped: str = ""  # why the row could not run (it then counts as neither)

    def cells(self) -> list[str]:
        errors = {k: n for k, n in self.calls.items() if k != "OK"}
        before, after = self.rss
        return [
            self.fault,
            str(sum(self.calls.values())),
            ", ".join(f"{k} {n}" for k, n in sorted(errors.items())) or "0",
            self.saw,
            self.recovery,
            f"{before:.0f} → {after:.0f} ({after - before:+.1f})",
            self.bound,
            f"SKIP ({self.skipped})" if self.skipped else "PASS" if self.passed else "FAIL",
        ]


HEADER = ["fault", "calls", "errors", "what the client saw", "recovery", "RSS MB", "bound", ""]


def table(rows: Sequence[Row]) -> str:
    """The rows as a Markdown table."""
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(row.cells()) + " |" for row in rows]
    return "\n".join(lines)
