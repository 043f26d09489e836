"""Two real `foldserve serve` processes behind a real HAProxy with the repository's config.

Checks what "Scaling out" promises: one address spreads calls over both replicas (their own
/metrics say how many each served); SIGTERM to a replica in the middle of a run loses no call
(every call the client made is counted and each must be OK) because readiness turns NOT_SERVING
at once, the balancer's gRPC health check takes the replica out within its drain delay, and only
then does the replica refuse; and a replica killed with SIGKILL is measured (what the client saw
is printed and recorded as test properties for the README).
"""

from __future__ import annotations

import re
import signal
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from foldserve._proto.foldserve.v1 import predictor_pb2, predictor_pb2_grpc
from tests.integration.deploy_balancer import Balancer, balancer_config_for, run_haproxy
from tests.integration.deploy_tools import COMPOSE_FILE, require_programs, wait_for
from tests.service.model_files import write_tiny_model
from tests.service.subprocess_server import ServerProcess, server_process

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

MODEL_NAME = "scaled"
CLIENT_THREADS = 4


def compose_drain_delay() -> str:
    """The drain delay the compose stack gives its replicas (the default after `:-`)."""
    match = re.search(r"FOLDSERVE_DRAIN_DELAY_SECONDS:-([\d.]+)\}", COMPOSE_FILE.read_text())
    assert match, "docker-compose.yml must set FOLDSERVE_DRAIN_DELAY_SECONDS with a default"
    return match[1]


def served_ok(server: ServerProcess) -> float:
    """foldserve_requests_total{method="Predict", code="OK"} on a replica's own /metrics."""
    url = f"http://127.0.0.1:{server.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = sample.labels
            if sample.name == "foldserve_requests_total" and labels.get("method") == "Predict":
                total += sample.value if labels.get("code") == "OK" else 0.0
    return total


@dataclass
class Load:
    """Client threads calling Predict through one channel until stopped; every call counted."""

    target: str
    codes: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.channel = grpc.insecure_channel(self.target)
        self.stub = predictor_pb2_grpc.PredictorStub(self.channel)
        self.threads = [threading.Thread(target=self._run) for _ in range(CLIENT_THREADS)]

    def _run(self) -> None:
        request = predictor_pb2.PredictRequest(features=[0.5] * 64, model_name=MODEL_NAME)
        while not self._stop.is_set():
            try:
                self.stub.Predict(request, timeout=10)
                code = "OK"
            except grpc.RpcError as exc:
                code = exc.code().name
                with self._lock:
                    self.failures.append(f"{time.monotonic():.3f} {code}: {exc.details()}")
            with self._lock:
                self.codes[code] += 1

    def start(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def stop(self) -> Counter[str]:
        self._stop.set()
        for thread in self.threads:
            thread.join(30)
        self.channel.close()
        return self.codes


@dataclass
class Cluster:
    replicas: list[ServerProcess]
    balancer: Balancer

    def wait_all_up(self) -> None:
        names = self.balancer.config.servers
        wait_for(
            lambda: all(self.balancer.state(n) == "UP" for n in names),
            timeout=30, what="both replicas UP in HAProxy", detail=self.balancer.logs,
        )  # fmt: skip

    def watch_state(self, server: str, until: threading.Event) -> list[tuple[float, str]]:
        """Poll HAProxy's view of `server` in a thread; a list of (monotonic time, state)."""
        changes: list[tuple[float, str]] = []

        def poll() -> None:
            while not until.is_set():
                state = self.balancer.state(server)
                if not changes or changes[-1][1] != state:
                    changes.append((time.monotonic(), state))
                time.sleep(0.05)

        threading.Thread(target=poll, daemon=True).start()
        return changes


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    haproxy = require_programs("haproxy")["haproxy"]
    model = write_tiny_model(tmp_path / "model.onnx")
    args = ["--model-name", MODEL_NAME, "--drain-delay-seconds", compose_drain_delay()]
    with (
        server_process(model, tmp_path, args) as first,
        server_process(model, tmp_path, args) as second,
    ):
        config = balancer_config_for([first.target, second.target], tmp_path / "haproxy")
        with run_haproxy(haproxy, config, tmp_path) as balancer:
            cluster = Cluster([first, second], balancer)
            cluster.wait_all_up()
            yield cluster


def test_one_address_spreads_calls_over_both_replicas(cluster: Cluster, record_property):
    channel = grpc.insecure_channel(cluster.balancer.target)
    stub = predictor_pb2_grpc.PredictorStub(channel)
    request = predictor_pb2.PredictRequest(features=[0.5] * 64, model_name=MODEL_NAME)
    calls = 300
    for _ in range(calls):
        assert stub.Predict(request, timeout=10).model_name == MODEL_NAME
    channel.close()
    per_replica = [served_ok(replica) for replica in cluster.replicas]
    print(f"[balancer] {calls} sequential calls through HAProxy: per replica {per_replica}")
    record_property("calls_per_replica", per_replica)
    assert sum(per_replica) == calls
    assert min(per_replica) >= calls / 3, f"round robin should spread calls: {per_replica}"


def test_sigterm_to_a_replica_mid_run_loses_no_call(cluster: Cluster, record_property):
    draining, staying = cluster.replicas
    delay = float(compose_drain_delay())
    done = threading.Event()
    states = cluster.watch_state(cluster.balancer.config.servers[0], done)
    load = Load(cluster.balancer.target).start()
    time.sleep(1.5)
    before = served_ok(staying)
    signalled = time.monotonic()
    draining.process.send_signal(signal.SIGTERM)
    last_count = served_ok(draining)
    while draining.process.poll() is None:  # its count is final once HAProxy took it out
        assert time.monotonic() - signalled < delay + 20, "the draining replica never exited"
        last_count = served_ok(draining) if states[-1][1] != "DOWN" else last_count
        time.sleep(0.1)
    exited = time.monotonic() - signalled
    time.sleep(1.0)  # calls go on against the remaining replica
    codes = load.stop()
    done.set()
    down = next((t - signalled for t, state in states if state == "DOWN" and t > signalled), None)
    figures = {
        "calls": sum(codes.values()),
        "codes": dict(codes),
        "balancer_down_after_s": None if down is None else round(down, 2),
        "replica_exited_after_s": round(exited, 2),
        "staying_replica_calls_during_run": served_ok(staying) - before,
    }
    print(f"[balancer] SIGTERM mid-run: {figures}")
    record_property("sigterm", figures)
    assert draining.process.returncode == 0, draining.stderr()
    assert codes["OK"] > 100 and set(codes) == {"OK"}, load.failures[:20]
    assert down is not None and down < delay, f"HAProxy states {states}: not out within {delay} s"
    assert exited >= delay


def test_sigkill_of_a_replica_what_clients_see(cluster: Cluster, record_property):
    """Measured, not promised: a killed replica cannot finish what it was doing."""
    killed, _ = cluster.replicas
    done = threading.Event()
    states = cluster.watch_state(cluster.balancer.config.servers[0], done)
    load = Load(cluster.balancer.target).start()
    time.sleep(1.5)
    killed_at = time.monotonic()
    killed.process.send_signal(signal.SIGKILL)
    wait_for(
        lambda: any(state.startswith("DOWN") and t > killed_at for t, state in states),
        timeout=15, what="HAProxy to mark the killed replica DOWN", detail=cluster.balancer.logs,
    )  # fmt: skip
    time.sleep(1.0)
    codes = load.stop()
    done.set()
    down = next(t - killed_at for t, state in states if state.startswith("DOWN") and t > killed_at)
    row = cluster.balancer.stats()[cluster.balancer.config.servers[0]]
    retried, redispatched = int(row["wretr"] or 0), int(row["wredis"] or 0)
    figures = {
        "calls": sum(codes.values()),
        "codes": dict(codes),
        "balancer_down_after_s": round(down, 2),
        "retries_by_balancer": retried,
        "redispatched_by_balancer": redispatched,
        "failures": load.failures[:5],
    }
    print(f"[balancer] SIGKILL mid-run: {figures}")
    record_property("sigkill", figures)
    assert codes["OK"] > 100
    assert set(codes) <= {"OK", "UNAVAILABLE", "INTERNAL"}, load.failures[:20]
