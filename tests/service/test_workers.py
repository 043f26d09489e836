"""`foldserve serve --workers N`: N processes on one port, metrics summed over them, every
worker drained on SIGTERM, a dead worker restarted, SIGHUP reaching them all."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path

import grpc
from prometheus_client.parser import text_string_to_metric_families

from foldserve._proto.foldserve.v1 import predictor_pb2 as pb
from foldserve._proto.foldserve.v1 import predictor_pb2_grpc as pb_grpc
from tests.service.model_files import write_tapped_model
from tests.service.subprocess_server import ServerProcess, server_process

FEATURES = pb.PredictRequest(features=[0.5] * 64)
WORKERS = ["--workers", "2", "--log-format", "json"]


def connection(target: str) -> grpc.Channel:
    """A channel with a connection of its own (channels in one process share them otherwise)."""
    return grpc.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)])


def metrics(server: ServerProcess) -> dict[str, float]:
    url = f"http://127.0.0.1:{server.metrics_port}/metrics"
    text = urllib.request.urlopen(url, timeout=10).read().decode()
    values: Counter = Counter()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = sample.name + (
                f"{{{sample.labels.get('code', '')}}}" if "code" in sample.labels else ""
            )
            if sample.labels.get("method", "Predict") == "Predict":
                values[key] += sample.value
    return dict(values)


def log_records(server: ServerProcess) -> list[dict]:
    lines = server.stderr().splitlines()
    return [json.loads(line) for line in lines if line.startswith("{")]


def worker_pids(server: ServerProcess) -> set[int]:
    return {r["pid"] for r in log_records(server) if r["message"].startswith("loaded model")}


def test_calls_spread_over_the_workers_and_the_metrics_add_up(
    tmp_path: Path, tiny_model_path: Path
) -> None:
    with server_process(tiny_model_path, tmp_path, [*WORKERS, "--access-log", "on"]) as server:
        for _ in range(12):
            with connection(server.target) as channel:
                stub = pb_grpc.PredictorStub(channel)
                for _ in range(5):
                    stub.Predict(FEATURES, timeout=10)
        seen = metrics(server)
        torch_maps = [
            pid
            for pid in worker_pids(server)
            if "libtorch" in Path(f"/proc/{pid}/maps").read_text()
        ]
        assert server.terminate() == 0, server.stderr()
    served_by = Counter(r["pid"] for r in log_records(server) if r.get("method") == "Predict")
    assert sum(served_by.values()) == 60
    assert set(served_by) == worker_pids(server) and len(served_by) == 2, served_by
    assert seen["foldserve_requests_total{OK}"] == 60
    assert seen["foldserve_workers"] == 2
    assert not torch_maps, "a worker mapped libtorch"


def test_the_http_port_is_shared_by_the_workers_too(tmp_path: Path, tiny_model_path: Path) -> None:
    """Each new HTTP connection may land on either worker (SO_REUSEPORT): both answer, and the
    metrics count every call, with its protocol in the access log."""
    body = json.dumps(
        {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 64], "data": [0.5] * 64}]}
    ).encode()
    with server_process(tiny_model_path, tmp_path, [*WORKERS, "--access-log", "on"]) as server:
        url = f"http://127.0.0.1:{server.http_port}/v2/models/foldserve/infer"
        for _ in range(40):  # urllib opens a connection per call
            request = urllib.request.Request(url, data=body, method="POST")
            with urllib.request.urlopen(request, timeout=10) as answer:
                assert answer.status == 200
        text = (
            urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=10)
            .read()
            .decode()
        )
        assert server.terminate() == 0, server.stderr()
    records = [r for r in log_records(server) if r.get("method") == "ModelInfer"]
    assert {r["protocol"] for r in records} == {"http"} and len(records) == 40
    assert len({r["pid"] for r in records}) == 2, "every worker answers on the HTTP port"
    total = sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "foldserve_requests_total"
        and sample.labels.get("method") == "ModelInfer"
        and sample.labels.get("code") == "OK"
    )
    assert total == 40


def test_sigterm_drains_every_worker_under_load(tmp_path: Path, tiny_model_path: Path) -> None:
    with server_process(tiny_model_path, tmp_path, WORKERS) as server:
        codes: Counter = Counter()
        lock = threading.Lock()

        def client() -> None:
            with connection(server.target) as channel:
                stub = pb_grpc.PredictorStub(channel)
                while True:
                    try:
                        stub.Predict(FEATURES, timeout=10)
                        code = "OK"
                    except grpc.RpcError as exc:
                        code = exc.code().name
                    with lock:
                        codes[code] += 1
                    if code != "OK":
                        return

        threads = [threading.Thread(target=client) for _ in range(6)]
        for thread in threads:
            thread.start()
        time.sleep(1.0)
        server.process.send_signal(signal.SIGTERM)
        exit_code = server.process.wait(60)
        for thread in threads:
            thread.join(30)
    assert exit_code == 0, server.stderr()
    assert codes["OK"] > 20
    assert set(codes) <= {"OK", "UNAVAILABLE"}, codes
    assert server.stderr().count('"message": "stopped"') == 3  # two workers and the supervisor


def test_a_dead_worker_is_restarted(tmp_path: Path, tiny_model_path: Path) -> None:
    with server_process(tiny_model_path, tmp_path, WORKERS) as server:
        victim = min(worker_pids(server))
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 60
        while len(worker_pids(server) - {victim}) < 2:
            assert time.monotonic() < deadline, server.stderr()
            time.sleep(0.1)
        seen = metrics(server)
        assert seen["foldserve_workers"] == 2 and seen["foldserve_worker_restarts_total"] == 1
        for _ in range(4):
            with connection(server.target) as channel:
                assert pb_grpc.PredictorStub(channel).Predict(FEATURES, timeout=10).class_name
        assert server.terminate() == 0, server.stderr()
    assert f"(pid {victim}) died" in server.stderr()


def test_workers_stop_when_the_supervisor_is_killed(tmp_path: Path, tiny_model_path: Path) -> None:
    """A supervisor killed outright leaves no worker serving the port on its own."""
    with server_process(tiny_model_path, tmp_path, WORKERS) as server:
        workers = worker_pids(server)
        assert len(workers) == 2, server.stderr()
        server.process.kill()
        server.process.wait(10)
        deadline = time.monotonic() + 30
        while alive := {pid for pid in workers if _running(pid)}:
            assert time.monotonic() < deadline, f"workers {alive} outlived their supervisor"
            time.sleep(0.1)


def _running(pid: int) -> bool:
    """True while `pid` exists and is not a zombie (an orphan's zombie is reaped by init)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def test_sighup_reloads_every_worker(tmp_path: Path) -> None:
    from tests.service.test_repository import add_version

    repo = tmp_path / "models"
    add_version(repo, 1)
    with server_process(repo, tmp_path, [*WORKERS, "--poll-seconds", "0"]) as server:
        add_version(repo, 2)
        server.process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 30
        while server.stderr().count("version 2 from") < 2:
            assert time.monotonic() < deadline, server.stderr()
            time.sleep(0.1)
        for _ in range(4):
            with connection(server.target) as channel:
                reply = pb_grpc.PredictorStub(channel).Predict(FEATURES, timeout=10)
                assert reply.model_version == "2"
        assert server.terminate() == 0


def versions_in_metrics(server: ServerProcess) -> Counter:
    url = f"http://127.0.0.1:{server.metrics_port}/metrics"
    text = urllib.request.urlopen(url, timeout=10).read().decode()
    return Counter(
        sample.labels["version"]
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if "version" in sample.labels
    )


def test_an_unloaded_version_leaves_the_metrics_of_every_worker(tmp_path: Path) -> None:
    """A worker's multiprocess file keeps the series of a version it unloaded: the supervisor
    must not show them."""
    import shutil

    from tests.service.test_repository import add_version

    repo = tmp_path / "models"
    add_version(repo, 1)
    args = [*WORKERS, "--poll-seconds", "0", "--keep-versions", "1"]
    with server_process(repo, tmp_path, args) as server:
        for _ in range(4):
            with connection(server.target) as channel:
                pb_grpc.PredictorStub(channel).Predict(FEATURES, timeout=10)
        assert set(versions_in_metrics(server)) == {"1"}
        add_version(repo, 2)
        shutil.rmtree(repo / "1")
        server.process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 30
        while server.stderr().count("version 2 from") < 2:
            assert time.monotonic() < deadline, server.stderr()
            time.sleep(0.1)
        for _ in range(4):
            with connection(server.target) as channel:
                pb_grpc.PredictorStub(channel).Predict(FEATURES, timeout=10)
        shown = versions_in_metrics(server)
        assert set(shown) == {"2"}, shown
        assert server.terminate() == 0


def test_a_bad_model_stops_the_workers_with_one_line(tmp_path: Path) -> None:
    import subprocess

    from tests.service.subprocess_server import env, foldserve_command

    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"garbage")
    result = subprocess.run(
        foldserve_command("serve", "--model", str(bad), "--workers", "2", "--host", "127.0.0.1",
                          "--port", "0", "--http-port", "0", "--metrics-port", "0"),
        capture_output=True, text=True, env=env(), timeout=120,
    )  # fmt: skip
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "not a loadable ONNX model" in lines[0], result.stderr


def test_a_second_server_with_workers_is_refused_the_port(
    tmp_path: Path, tiny_model_path: Path
) -> None:
    import subprocess

    from tests.service.subprocess_server import env, foldserve_command

    with server_process(tiny_model_path, tmp_path, WORKERS) as first:
        result = subprocess.run(
            foldserve_command("serve", "--model", str(tiny_model_path), "--workers", "2",
                              "--host", "127.0.0.1", "--port", str(first.port),
                              "--metrics-port", "0"),
            capture_output=True, text=True, env=env(), timeout=120,
        )  # fmt: skip
        assert result.returncode == 2
        assert "port in use" in result.stderr
        assert first.terminate() == 0


def test_shift_series_are_published_by_every_worker(tmp_path: Path) -> None:
    """With workers the shift collector is never scraped: each worker publishes its monitor's
    series into multiprocess gauges (livemax), which the supervisor serves."""
    mean = [0.0, 1.0, 2.0, 3.0]
    model = write_tapped_model(tmp_path / "tapped.onnx", mean)
    with server_process(model, tmp_path, WORKERS) as server:
        url = f"http://127.0.0.1:{server.metrics_port}/metrics"
        text = urllib.request.urlopen(url, timeout=10).read().decode()
        assert server.terminate() == 0, server.stderr()
    shift = {
        (sample.name, sample.labels.get("summary", "")): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name.startswith("foldserve_shift_")
    }
    assert shift[("foldserve_shift_arl_examples", "")] == 1e6
    assert shift[("foldserve_shift_alarm", "")] == 0.0
    assert ("foldserve_shift_score", "input/level") in shift
    assert ("foldserve_shift_alarm_example", "classes") in shift


def test_the_supervisor_wakes_when_a_worker_dies() -> None:
    """A death is seen at once (the worker's sentinel), not at the next look, so the restart
    starts at once; with none, `wait` returns after its timeout."""
    import multiprocessing

    from foldserve.server.config import ServeConfig
    from foldserve.server.workers import Supervisor

    supervisor = Supervisor(ServeConfig(model="unused"), 1)
    worker = multiprocessing.get_context("spawn").Process(target=time.sleep, args=(0.5,))
    worker.start()
    supervisor._workers = [worker]
    started = time.monotonic()
    supervisor.wait(60.0)
    assert time.monotonic() - started < 30.0 and not worker.is_alive()
    supervisor.wait(0.01)  # a dead one left: returns at once, never blocks
