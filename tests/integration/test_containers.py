"""The compose stack in real containers: trainer, server, balancer, Prometheus (no Grafana or
Alertmanager image here).

No registry is reachable, so the test makes everything itself: a Docker engine with its state in
a temporary directory, a Debian base image from debootstrap (cached), the wheels the images
install (cached), then `docker-compose up -d --build` of the repository's compose file with the
base image passed as a build argument. From the host it makes real gRPC predictions through the
balancer's published port (an HAProxy image made from the host's binary) and reads Prometheus's
API; then `down -v`, and the engine goes with no trace.
Timings of each phase are printed (`pytest -s`) and recorded as test properties.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.deploy_balancer import build_haproxy_image
from tests.integration.deploy_docker import (
    BASE_IMAGE,
    DockerEngine,
    base_rootfs_tarball,
    cache_dir,
    images_key,
    project_copy,
    wheelhouse,
)
from tests.integration.deploy_grpc import Caller, digits_examples, serving
from tests.integration.deploy_tools import (
    free_port,
    http_json,
    require_programs,
    run,
    skip_or_fail,
    tail,
    wait_for,
)

pytestmark = pytest.mark.integration

PROMETHEUS_IMAGE = "local/prometheus:test"
BALANCER_IMAGE = "local/haproxy:test"
MODEL_NAME = "digits-mlp"
# grafana, alertmanager: no image can be had here
SERVICES = ("trainer", "server", "balancer", "prometheus")


class Timer:
    def __init__(self, record) -> None:
        self.record = record
        self.start = self.last = time.monotonic()

    def mark(self, phase: str, note: str = "") -> None:
        now = time.monotonic()
        self.record(f"seconds_{phase}", round(now - self.last, 1))
        total = f"total {now - self.start:.1f} s"
        print(f"[containers] {phase}: {now - self.last:.1f} s ({total}) {note}".rstrip())
        self.last = now


@pytest.fixture
def workdir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="fs-containers-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.mark.timeout(1800)
def test_compose_stack_in_real_containers(workdir: Path, record_property):
    if os.geteuid() != 0:
        skip_or_fail("real containers need root here (the test starts its own dockerd)")
    programs = require_programs(
        "dockerd", "docker", "docker-compose", "debootstrap", "prometheus", "haproxy"
    )
    timer = Timer(record_property)
    log = workdir / "prepare.log"
    try:
        rootfs = base_rootfs_tarball(programs["debootstrap"], log)
        wheels = wheelhouse(log)
    except Exception as exc:  # no Debian mirror or index reachable, say
        skip_or_fail(f"cannot prepare the base image or wheels: {exc}\n{tail(log)}")
    project = project_copy(workdir / "project", wheels)
    # Images and build cache of an earlier run with exactly the same inputs (None: build all).
    key = images_key(project, rootfs, wheels, programs["prometheus"], programs["haproxy"])
    snapshot = cache_dir() / f"docker-images-{key}.tar"
    seed = snapshot if snapshot.is_file() else None
    timer.mark("prepare_base_and_wheels")

    engine = DockerEngine(programs["dockerd"], programs["docker"], seed=seed)
    try:
        engine.start()
        if seed is None:
            engine.import_rootfs(rootfs, BASE_IMAGE)
            engine.build_prometheus_image(programs["prometheus"], BASE_IMAGE, PROMETHEUS_IMAGE)
            build_haproxy_image(engine, programs["haproxy"], BASE_IMAGE, BALANCER_IMAGE)
        timer.mark("engine_and_base_images" + ("_from_snapshot" if seed else ""))
        _run_stack(engine, programs["docker-compose"], project, timer)
        if seed is None:
            engine.shutdown_daemon()
            engine.save_snapshot(snapshot)
            timer.mark("save_image_snapshot")
    finally:
        engine.stop()
    timer.mark("engine_stop", str(engine.timings))
    assert not engine.leftovers(), f"left behind: {engine.leftovers()}"


def _run_stack(engine: DockerEngine, compose_bin: str, project: Path, timer: Timer) -> None:
    ports = {
        "FOLDSERVE_GRPC_HOST_PORT": free_port(),
        "FOLDSERVE_HTTP_HOST_PORT": free_port(),
        "BALANCER_STATS_HOST_PORT": free_port(),
        "PROMETHEUS_HOST_PORT": free_port(),
    }
    env = engine.env(
        COMPOSE_PROJECT_NAME=f"fstest{uuid.uuid4().hex[:8]}",
        FOLDSERVE_BASE_IMAGE=BASE_IMAGE,
        FOLDSERVE_PIP_NO_INDEX="1",
        FOLDSERVE_IMAGE_TAG="test",
        PROMETHEUS_IMAGE=PROMETHEUS_IMAGE,
        BALANCER_IMAGE=BALANCER_IMAGE,
        FOLDSERVE_MODEL_NAME=MODEL_NAME,
        FOLDSERVE_TRAIN_ARGS="--epochs 3 --no-progress",
        FOLDSERVE_HEALTHCHECK_INTERVAL="2s",
        **{name: str(port) for name, port in ports.items()},
    )
    for name in [k for k in env if k.startswith("FOLDSERVE_") and k not in _OURS]:
        del env[name]  # the caller's own settings must not leak into the stack

    def compose(*args: str, timeout: float = 300, check: bool = True):
        result = run(
            [compose_bin, "--ansi", "never", "-f", str(project / "docker-compose.yml"), *args],
            timeout=timeout,
            env=env,
            cwd=project,
            check=check,
        )
        if os.environ.get("FOLDSERVE_TEST_COMPOSE_LOG"):  # for timing investigations
            with open(os.environ["FOLDSERVE_TEST_COMPOSE_LOG"], "a") as log:
                log.write(f"$ docker-compose {' '.join(args)}\n{result.stdout}{result.stderr}\n")
        return result

    try:
        # Both images at once (2 cores); `up --build` then finds them in the build cache.
        compose("build", "--parallel", "trainer", "server", timeout=1500)
        timer.mark("compose_build_parallel")
        compose("up", "-d", "--build", *SERVICES, timeout=600)
        timer.mark("compose_up_build")
        server_id = compose("ps", "-q", "server").stdout.strip()
        wait_for(
            lambda: engine.docker("inspect", "-f", "{{.State.Health.Status}}", server_id)
            .stdout.strip() == "healthy",
            timeout=120,
            what="the server container's HEALTHCHECK (foldserve health) to pass",
            detail=lambda: compose("logs", "--tail", "40", check=False).stdout,
        )  # fmt: skip
        timer.mark("server_healthy")
        _check_images(engine, server_id)
        _check_predictions_and_prometheus(ports)
        timer.mark("predict_and_prometheus")
        again = compose("run", "--rm", "--no-deps", "trainer", timeout=120)
        assert "nothing to do" in again.stdout + again.stderr, "trainer retrained over a model"
        timer.mark("trainer_again")
    except BaseException:
        # What each container said (a server that never turned healthy fails `up` itself).
        print(compose("ps", check=False).stdout)
        print(compose("logs", "--tail", "60", check=False).stdout)
        raise
    finally:
        compose("down", "-v", "--timeout", "20", timeout=180, check=False)
        timer.mark("compose_down")


_OURS = {
    "FOLDSERVE_BASE_IMAGE",
    "FOLDSERVE_PIP_NO_INDEX",
    "FOLDSERVE_IMAGE_TAG",
    "FOLDSERVE_MODEL_NAME",
    "FOLDSERVE_TRAIN_ARGS",
    "FOLDSERVE_HEALTHCHECK_INTERVAL",
    "FOLDSERVE_GRPC_HOST_PORT",
    "FOLDSERVE_HTTP_HOST_PORT",
}


def _check_images(engine: DockerEngine, server_id: str) -> None:
    config = engine.docker("inspect", "-f", "{{json .Config}}", server_id).stdout
    assert '"User":"10001:10001"' in config, f"server does not run as 10001: {config}"
    assert "foldserve health" in config, "HEALTHCHECK is not the gRPC health check"
    no_torch = engine.docker(
        "exec", server_id, "python", "-c", "import importlib.util as u; print(u.find_spec('torch'))"
    )
    assert no_torch.stdout.strip() == "None", "torch is in the serving image"


def _check_predictions_and_prometheus(ports: dict[str, int]) -> None:
    target = f"127.0.0.1:{ports['FOLDSERVE_GRPC_HOST_PORT']}"
    # The balancer marks the replica UP after its first passing checks (a second or two).
    wait_for(lambda: serving(target), timeout=30, what=f"grpc.health.v1 SERVING via {target}")
    caller = Caller(target, MODEL_NAME)
    try:
        examples = digits_examples(3)
        replies = [caller.predict(example) for example in examples]
        assert all(reply is not None for reply in replies), f"calls: {dict(caller.sent)}"
        assert replies[0].model_name == MODEL_NAME and len(replies[0].probabilities) == 10
        assert caller.predict(examples[0][:-1]) is None  # INVALID_ARGUMENT
        assert caller.model_infer(examples[1])
    finally:
        caller.close()
    expected = {f"{method}/{code}": n for (method, code), n in caller.sent.items()}

    prometheus = f"http://127.0.0.1:{ports['PROMETHEUS_HOST_PORT']}"

    def query(expr: str) -> list:
        body = http_json(f"{prometheus}/api/v1/query", {"query": expr})
        assert body["status"] == "success", body
        return body["data"]["result"]

    def server_target_up() -> bool:
        body = http_json(f"{prometheus}/api/v1/targets", {"state": "active"})
        targets = [t for t in body["data"]["activeTargets"] if t["labels"]["job"] == "foldserve"]
        return bool(targets) and all(t["health"] == "up" for t in targets)

    # The repository's config: DNS discovery every 5 s, a scrape every 15 s.
    wait_for(server_target_up, timeout=90, what="Prometheus's foldserve target to be up")

    def counted() -> dict[str, float]:
        rows = query(f'sum by (method, code) (foldserve_requests_total{{model="{MODEL_NAME}"}})')
        found = {f"{r['metric']['method']}/{r['metric']['code']}": r["value"][1] for r in rows}
        return {key: float(value) for key, value in found.items() if float(value)}

    wait_for(
        lambda: counted() == expected,
        timeout=60,
        what=f"Prometheus to count the calls sent {expected}",
        detail=lambda: f"counted: {counted()}",
    )
