"""`--workers 2` under many reloads: versions come and go without growing the server.

Each worker keeps its metric values in prometheus_client's multiprocess files, which the
supervisor merges at every scrape. prometheus_client never forgets a series there: every version
ever loaded left a few hundred series in each worker (about 0.2 MB of file, 0.5 MB of heap) and
in every scrape's work. These tests load 200 versions and 20 model load/unload cycles and bound
what is left.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import time
import urllib.request
from pathlib import Path

from foldserve._proto.inference import grpc_predict_v2_pb2 as v2
from foldserve._proto.inference import grpc_predict_v2_pb2_grpc as v2_grpc
from foldserve.bench.chaos.procs import workers
from tests.service.model_files import write_tiny_model
from tests.service.subprocess_server import ServerProcess, server_process
from tests.service.test_workers import connection

VERSIONS = 200
# Before: ~0.2 MB of files and ~0.6 MB of RSS per version per worker (+70 MB and +240 MB here).
FILES_BOUND_MB = 8.0
RSS_BOUND_MB = 40.0


def descendants(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        for child in (task / "children").read_text().split():
            found += [int(child), *descendants(int(child))]
    return found


def rss_mb(pid: int) -> float:
    total = 0
    for each in (pid, *descendants(pid)):
        status = Path(f"/proc/{each}/status").read_text()
        total += int(re.search(r"VmRSS:\s+(\d+)", status).group(1))
    return total / 1024


def metric_files_mb(server: ServerProcess) -> float:
    """The size of the workers' multiprocess files."""
    worker = descendants(server.process.pid)[-1]
    environ = Path(f"/proc/{worker}/environ").read_bytes().split(b"\0")
    folder = next(e for e in environ if e.startswith(b"PROMETHEUS_MULTIPROC_DIR=")).split(b"=")[1]
    return sum(p.stat().st_size for p in Path(folder.decode()).glob("*.db")) / 1e6


def scrape(server: ServerProcess) -> tuple[str, float]:
    started = time.monotonic()
    url = f"http://127.0.0.1:{server.metrics_port}/metrics"
    text = urllib.request.urlopen(url, timeout=30).read().decode()
    return text, time.monotonic() - started


def wait_loaded(server: ServerProcess, count: int, what: str = "loaded model") -> None:
    deadline = time.monotonic() + 30
    while server.stderr().count(what) < count:
        assert time.monotonic() < deadline, server.stderr()[-3000:]
        time.sleep(0.02)


def push(repo: Path, model: Path, version: int) -> None:
    staging = repo / f".{version}"
    staging.mkdir()
    shutil.copy(model, staging / "model.onnx")
    staging.rename(repo / str(version))
    shutil.rmtree(repo / str(version - 2))


def test_many_versions_leave_no_series_behind(tmp_path: Path) -> None:
    repo, model = tmp_path / "models", write_tiny_model(tmp_path / "model.onnx")
    for version in (1, 2):
        (repo / str(version)).mkdir(parents=True)
        shutil.copy(model, repo / str(version) / "model.onnx")
    args = ["--workers", "2", "--poll-seconds", "0.05", "--keep-versions", "2"]
    with server_process(repo, tmp_path, args) as server:
        wait_loaded(server, 4)
        scrape(server)  # the supervisor's first scrape allocates what later ones reuse
        rss_before, loads = rss_mb(server.process.pid), server.stderr().count("loaded model")
        for version in range(3, VERSIONS + 3):
            push(repo, model, version)
            loads += 2
            wait_loaded(server, loads)
        time.sleep(0.5)  # a few polls: the last unloaded versions are freed
        text, seconds = scrape(server)
        files, rss_after = metric_files_mb(server), rss_mb(server.process.pid)
        shown = set(re.findall(r'[{,]version="([^"]*)"', text)) - {""}
        print(f"{VERSIONS} versions: RSS {rss_before:.0f} -> {rss_after:.0f} MB, files {files:.1f}")
        print(f"MB, scrape {seconds:.2f} s")
        assert shown == {str(VERSIONS + 1), str(VERSIONS + 2)}, shown
        assert files < FILES_BOUND_MB
        assert rss_after - rss_before < RSS_BOUND_MB
        assert server.terminate() == 0


def test_model_control_reaches_every_worker(tmp_path: Path) -> None:
    """RepositoryModelLoad/Unload over one connection: every worker loads (or unloads) the model,
    and a worker started later loads what is loaded."""
    repo, model = tmp_path / "models", write_tiny_model(tmp_path / "model.onnx")
    for name in ("stay", "cycle"):
        (repo / name / "1").mkdir(parents=True)
        shutil.copy(model, repo / name / "1" / "model.onnx")
    args = ["--workers", "2", "--model-control-mode", "explicit", "--load-model", "stay"]
    with server_process(repo, tmp_path, args, source="--model-repository") as server:
        channels = [connection(server.target) for _ in range(8)]
        stubs = [v2_grpc.GRPCInferenceServiceStub(c) for c in channels]

        def ready() -> set[bool]:
            asked = v2.ModelReadyRequest(name="cycle")
            return {stub.ModelReady(asked, timeout=10).ready for stub in stubs}

        for cycle in range(20):
            stubs[cycle % 8].RepositoryModelLoad(v2.RepositoryModelLoadRequest(model_name="cycle"))
            assert ready() == {True}
            unload = v2.RepositoryModelUnloadRequest(model_name="cycle")
            stubs[(cycle + 3) % 8].RepositoryModelUnload(unload)
            assert ready() == {False}
        stubs[0].RepositoryModelLoad(v2.RepositoryModelLoadRequest(model_name="cycle"))
        for channel in channels:
            channel.close()
        loaded = server.stderr().count("loaded model cycle")
        victim = descendants(server.process.pid)[-1]
        os.kill(victim, signal.SIGKILL)
        wait_loaded(server, loaded + 1, "loaded model cycle")  # the new worker, as it starts
        deadline = time.monotonic() + 30
        while len(set(workers(server.process.pid, server.port)) - {victim}) < 2:
            assert time.monotonic() < deadline, server.stderr()[-2000:]
            time.sleep(0.05)
        channels = [connection(server.target) for _ in range(8)]
        stubs = [v2_grpc.GRPCInferenceServiceStub(c) for c in channels]
        assert ready() == {True}
        for channel in channels:
            channel.close()
        assert server.terminate() == 0, server.stderr()[-2000:]
