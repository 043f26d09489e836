"""One `foldserve serve --model-repository` process of the repository-scale benchmark: how long
until every model is ready, how much memory it holds, and how long a client's
`RepositoryModelLoad` of one model takes.

Ready means what a client sees: `ServerReady` answers true and `RepositoryIndex` lists every
expected model READY. It is timed from the moment the process is started, so it includes
Python's start and the imports (an empty server's time, measured the same way, shows how much).
A model's own load time is better seen in `explicit` mode, one `RepositoryModelLoad` at a time,
and its memory as the server's resident memory before and after it.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc

from foldserve._proto.inference import grpc_predict_v2_pb2 as v2
from foldserve._proto.inference import grpc_predict_v2_pb2_grpc as v2_grpc
from foldserve.bench.suite import servers
from foldserve.bench.suite.cpu import tree_cpu_seconds, tree_rss_bytes

READY_SECONDS = 120.0
POLL_SECONDS = 0.01
ASK_SECONDS = 5.0


class NotReady(RuntimeError):
    """The server did not list every expected model READY in time; the message says which."""


@dataclass
class RunningRepository:
    """A started server, how long it took to be ready and its resident memory then."""

    server: servers.Server
    ready_s: float
    rss_bytes: int

    @property
    def pid(self) -> int:
        return self.server.process.pid

    def rss_now(self) -> int:
        return tree_rss_bytes(self.pid)

    def cpu_seconds(self) -> float:
        return tree_cpu_seconds(self.pid)

    def peak_rss_bytes(self) -> int:
        """The server process's highest resident memory so far (VmHWM; one worker only)."""
        status = Path(f"/proc/{self.pid}/status").read_text()
        return int(status.split("VmHWM:")[1].split()[0]) * 1024

    def load(self, name: str) -> float:
        """Load model `name` (`explicit` mode); the seconds the RepositoryModelLoad call took.

        Raises:
            grpc.RpcError: the server refused or failed to load it.
        """
        with grpc.insecure_channel(self.server.target) as channel:
            stub = v2_grpc.GRPCInferenceServiceStub(channel)
            stub.ServerReady(v2.ServerReadyRequest(), timeout=ASK_SECONDS)  # connected first
            started = time.perf_counter()
            stub.RepositoryModelLoad(
                v2.RepositoryModelLoadRequest(model_name=name), timeout=READY_SECONDS
            )
            return time.perf_counter() - started


def serve_command(repository: Path, workers: int, explicit: bool) -> list[str]:
    """`foldserve serve` on `repository`, local ports picked by the server, defaults otherwise
    (`explicit`: model control mode explicit, nothing loaded at start)."""
    command = [
        sys.executable, "-m", "foldserve.cli", "serve", "--model-repository", str(repository),
        "--host", "127.0.0.1", "--port", "0", "--http-port", "0", "--metrics-port", "0",
        "--workers", str(workers),
    ]  # fmt: skip
    return command + (["--model-control-mode", "explicit"] if explicit else [])


@contextmanager
def serving(
    repository: Path, models: Sequence[str], workers: int = 1, explicit: bool = False
) -> Iterator[RunningRepository]:
    """Serve `repository` until every one of `models` is ready (`explicit`: no model loaded at
    start, give no `models`).

    Raises:
        servers.ServerStartError: the server did not start.
        NotReady: it started, but not every model became ready.
    """
    command = serve_command(repository, workers, explicit)
    started = time.perf_counter()
    with servers.started(command, name="foldserve") as server:
        wait_until_ready(server.target, models, started + READY_SECONDS)
        ready_s = time.perf_counter() - started
        yield RunningRepository(server, ready_s, tree_rss_bytes(server.process.pid))


def wait_until_ready(target: str, models: Sequence[str], deadline: float) -> None:
    """Poll `target` until the server is ready with every one of `models` READY.

    Raises:
        NotReady: not by `deadline` (a `time.perf_counter()` value).
    """
    missing: set[str] = set(models)
    with grpc.insecure_channel(target) as channel:
        stub = v2_grpc.GRPCInferenceServiceStub(channel)
        while True:
            try:
                missing = _not_ready(stub, models)
            except grpc.RpcError:  # still starting
                pass
            else:
                if not missing:
                    return
            if time.perf_counter() > deadline:
                shown = sorted(missing)[:5]
                raise NotReady(f"{len(missing)} models not ready in time, e.g. {shown}")
            time.sleep(POLL_SECONDS)


def _not_ready(stub: v2_grpc.GRPCInferenceServiceStub, models: Sequence[str]) -> set[str]:
    if not stub.ServerReady(v2.ServerReadyRequest(), timeout=ASK_SECONDS).ready:
        return set(models) or {"(server)"}
    index = stub.RepositoryIndex(v2.RepositoryIndexRequest(ready=True), timeout=ASK_SECONDS)
    return set(models) - {entry.name for entry in index.models if entry.state == "READY"}
