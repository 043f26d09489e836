"""What the repository rows watch on a running server: its log (which worker loaded or refused
which version), its merged /metrics, its RepositoryIndex, and model control over gRPC."""

from __future__ import annotations

import asyncio
import re
import time
import urllib.request
from collections import Counter
from pathlib import Path

import grpc

from foldserve._proto.inference import grpc_predict_v2_pb2 as v2
from foldserve._proto.inference import grpc_predict_v2_pb2_grpc as v2_grpc
from foldserve.bench.chaos.harness import Serving

LOADED = re.compile(r"loaded model (\S+) version (\S+) from")
UNLOADED = re.compile(r"unloaded model (\S+) version (\S+)")
REFUSED = re.compile(r"model (\S+) version (\S+) refused: (.*)")
GOOD_AGAIN = re.compile(r"model (\S+) version (\S+): its file is good again")
BAD_CONFIG = re.compile(r"model (\S+): (.*); its loaded versions keep serving")
SERIES_VERSION = re.compile(r'model="([^"]*)",[^}]*?\bversion="([^"]*)"')
WAIT_SECONDS = 60.0


class LogWatch:
    """Counts, as the log grows, each (model, version) loaded (or whose kept copy is current
    again), unloaded and refused, and keeps the last refusal's reason."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._offset = 0
        self.loaded: Counter = Counter()
        self.unloaded: Counter = Counter()
        self.refused: Counter = Counter()
        self.reasons: dict[tuple[str, str], str] = {}
        self.config_refused: Counter = Counter()  # a bad config.pbtxt, per model
        self.config_reasons: dict[str, str] = {}

    def read(self) -> None:
        with self._path.open("rb") as log:
            log.seek(self._offset)
            chunk = log.read()
        end = chunk.rfind(b"\n") + 1  # whole lines only
        self._offset += end
        for line in chunk[:end].decode(errors="replace").splitlines():
            if match := LOADED.search(line):
                self.loaded[match.groups()] += 1
            elif match := UNLOADED.search(line):
                self.unloaded[match.groups()] += 1
            elif match := REFUSED.search(line):
                self.refused[match.group(1), match.group(2)] += 1
                self.reasons[match.group(1), match.group(2)] = match.group(3)
            elif match := GOOD_AGAIN.search(line):  # the copy kept serving is current again
                self.loaded[match.groups()] += 1
            elif match := BAD_CONFIG.search(line):
                self.config_refused[match.group(1)] += 1
                self.config_reasons[match.group(1)] = match.group(2)

    async def until(self, done, limit: float = WAIT_SECONDS) -> float:
        """Wait until `done(self)` holds; the monotonic time it did (nan: not in `limit` s)."""
        deadline = time.monotonic() + limit
        while True:
            self.read()
            if done(self):
                return time.monotonic()
            if time.monotonic() > deadline:
                return float("nan")
            await asyncio.sleep(0.005)


def scrape(serving: Serving) -> tuple[str, float]:
    """The supervisor's /metrics, and how long it took (seconds)."""
    started = time.monotonic()
    url = f"http://127.0.0.1:{serving.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=60) as answer:
        text = answer.read().decode()
    return text, time.monotonic() - started


def series_versions(text: str) -> dict[str, set[str]]:
    """The versions each model has series of in a /metrics text (model "" left out)."""
    shown: dict[str, set[str]] = {}
    for model, version in SERIES_VERSION.findall(text):
        if model:
            shown.setdefault(model, set()).add(version)
    return shown


class Admin:
    """Model control and the repository index over gRPC, on a connection of its own."""

    def __init__(self, serving: Serving) -> None:
        self._channel = grpc.aio.insecure_channel(
            serving.target("grpc"), options=[("grpc.use_local_subchannel_pool", 1)]
        )
        self._stub = v2_grpc.GRPCInferenceServiceStub(self._channel)

    async def load(self, name: str) -> str:
        """Load `name`: "OK" or the status code's name."""
        return await self._call(self._stub.RepositoryModelLoad, v2.RepositoryModelLoadRequest, name)

    async def unload(self, name: str) -> str:
        ask = v2.RepositoryModelUnloadRequest
        return await self._call(self._stub.RepositoryModelUnload, ask, name)

    async def _call(self, method, message, name: str) -> str:
        try:
            await method(message(model_name=name), timeout=120)
        except grpc.aio.AioRpcError as exc:
            return exc.code().name
        return "OK"

    async def index(self) -> list[v2.RepositoryIndexResponse.ModelIndex]:
        answer = await self._stub.RepositoryIndex(v2.RepositoryIndexRequest(), timeout=30)
        return list(answer.models)

    async def close(self) -> None:
        await self._channel.close()
