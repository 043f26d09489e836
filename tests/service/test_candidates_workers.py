"""A candidate version under `--workers 2`: built by the worker a request reached, served by
every worker, by a worker started after it too, and promoted everywhere."""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
from prometheus_client.parser import text_string_to_metric_families
from sklearn.datasets import load_digits

from tests.service.subprocess_server import ServerProcess, server_process
from tests.service.test_workers import log_records, worker_pids

ARGS = ["--workers", "2", "--log-format", "json", "--adapt-reservoir", "100",
        "--adapt-on-alarm", "off", "--poll-seconds", "0"]  # fmt: skip
CALLS = 30  # on fresh connections, which the kernel spreads over the workers


def post(server: ServerProcess, path: str, body: dict) -> tuple[int, dict]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{server.http_port}{path}", json.dumps(body).encode(), method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            text = answer.read()
            return answer.status, json.loads(text) if text else {}
    except urllib.error.HTTPError as error:
        with error:
            return error.code, json.loads(error.read())


def infer(server: ServerProcess, example: np.ndarray, version: str = "") -> tuple[int, dict]:
    path = f"/v2/models/digits/versions/{version}/infer" if version else "/v2/models/digits/infer"
    tensor = {"name": "input", "shape": [1, 64], "datatype": "FP32", "data": example.tolist()}
    return post(server, path, {"inputs": [tensor]})


def series(server: ServerProcess, name: str) -> dict[tuple, float]:
    url = f"http://127.0.0.1:{server.metrics_port}/metrics"
    text = urllib.request.urlopen(url, timeout=10).read().decode()
    return {
        tuple(sorted(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name
    }


def _stat(pid: int | str) -> list[str]:
    """/proc/PID/stat's fields after the command name ([] for a process gone)."""
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return []


def children(pid: int) -> list[int]:
    return [
        int(entry.name)
        for entry in Path("/proc").iterdir()
        if entry.name.isdigit() and _stat(entry.name)[1:2] == [str(pid)]
    ]


def _running(pid: int) -> bool:
    return _stat(pid)[:1] not in ([], ["Z"])


def candidate_pids(server: ServerProcess) -> set[int]:
    """The workers that logged serving candidate version 2."""
    return {r["pid"] for r in log_records(server) if "candidate version 2 from" in r["message"]}


def test_every_worker_serves_the_candidate_and_its_promotion(
    tmp_path: Path, trained_mlp_dir: Path
) -> None:
    (tmp_path / "repo" / "digits" / "1").mkdir(parents=True)
    shutil.copy(trained_mlp_dir / "model.onnx", tmp_path / "repo" / "digits" / "1")
    grey = load_digits().data.astype(np.float32) + 4.0
    with server_process(tmp_path / "repo", tmp_path, ARGS, source="--model-repository") as server:
        for example in grey[:400]:
            assert infer(server, example)[0] == 200
        assert post(server, "/v2/repository/models/digits/load",
                    {"parameters": {"candidate": "adapt"}}) == (200, {})  # fmt: skip
        answers = [infer(server, grey[500 + i], "2") for i in range(CALLS)]
        assert {status for status, _ in answers} == {200}, answers
        examples = series(server, "foldserve_candidate_examples")
        assert examples == {(("model", "digits"), ("version", "2")): 100.0}

        before = worker_pids(server)
        assert candidate_pids(server) == before
        victim = min(before)
        helpers = children(victim)  # its adaptation process (and multiprocessing's tracker)
        assert helpers, "a worker with a reservoir runs an adaptation process"
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 60
        while not candidate_pids(server) - before:  # the new worker serves it before any call
            assert time.monotonic() < deadline, server.stderr()
            time.sleep(0.1)
        assert len(worker_pids(server) - {victim}) == 2
        while any(_running(pid) for pid in helpers):  # they do not outlive the killed worker
            assert time.monotonic() < deadline, f"left running: {helpers}"
            time.sleep(0.1)
        answers = [infer(server, grey[600 + i], "2") for i in range(CALLS)]
        assert {status for status, _ in answers} == {200}, answers  # the new worker has it too

        assert post(server, "/v2/repository/models/digits/load",
                    {"parameters": {"candidate": "promote"}}) == (200, {})  # fmt: skip
        served = {infer(server, grey[700 + i])[1]["model_version"] for i in range(CALLS)}
        assert served == {"2"}
        assert server.terminate() == 0, server.stderr()
    assert (tmp_path / "repo" / "digits" / "2" / "model.onnx").is_file()
    assert sorted(p.name for p in (tmp_path / "repo" / "digits").iterdir()) == ["1", "2"]
