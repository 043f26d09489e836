"""The model repository: numbered versions, hot reload, refusals, no failed call during a swap."""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections import Counter
from pathlib import Path

import grpc
import numpy as np
import pytest

from foldserve._proto.foldserve.v1 import predictor_pb2 as pb
from foldserve._proto.foldserve.v1 import predictor_pb2_grpc as pb_grpc
from foldserve._proto.inference import grpc_predict_v2_pb2 as v2
from foldserve._proto.inference import grpc_predict_v2_pb2_grpc as v2_grpc
from tests.service.conftest import Served, ServeFactory
from tests.service.model_files import write_tiny_model

FEATURES = pb.PredictRequest(features=[0.5] * 64)


def add_version(repo: Path, version: int, seed: int | None = None) -> Path:
    """Write a valid model as `repo/<version>/model.onnx`, moved into place whole."""
    folder = repo / str(version)
    folder.mkdir(parents=True, exist_ok=True)
    staging = repo / f".{version}.partial"
    write_tiny_model(staging, seed=version if seed is None else seed)
    staging.replace(folder / "model.onnx")
    return folder / "model.onnx"


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "models"
    for version in (1, 2):
        add_version(root, version)
    return root


def versions(served: Served) -> list[str]:
    return [v.version for v in served.running.repository.model().versions]


def predict_version(served: Served, version: str = "") -> str:
    stub = pb_grpc.PredictorStub(served.channel)
    request = pb.PredictRequest(features=[0.5] * 64, model_version=version)
    return stub.Predict(request, timeout=5).model_version


def test_newest_version_serves_and_older_ones_stay_addressable(
    serve: ServeFactory, repo: Path
) -> None:
    served = serve(repo, keep_versions=2)
    assert versions(served) == ["2", "1"]
    assert predict_version(served) == "2"
    assert predict_version(served, "1") == "1"
    with pytest.raises(grpc.RpcError) as caught:
        predict_version(served, "7")
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert "model_version: unknown version '7'" in caught.value.details()
    assert "['2', '1']" in caught.value.details()
    stub = v2_grpc.GRPCInferenceServiceStub(served.channel)
    metadata = stub.ModelMetadata(v2.ModelMetadataRequest(name="foldserve"), timeout=5)
    assert list(metadata.versions) == ["2", "1"]
    assert served.sample("foldserve_requests_total", method="Predict", code="OK") == 1
    ok_v1 = {"model": "foldserve", "version": "1", "method": "Predict", "code": "OK"}
    assert served.registry.get_sample_value("foldserve_requests_total", ok_v1) == 1


def test_a_new_version_is_loaded_and_the_oldest_unloaded(serve: ServeFactory, repo: Path) -> None:
    served = serve(repo, keep_versions=2, poll_seconds=0)
    add_version(repo, 3)
    served.running.repository.refresh()
    assert versions(served) == ["3", "2"]
    assert predict_version(served) == "3"
    info = {"model": "foldserve", "version": "1", "sha256": ""}
    gone = [
        s for f in served.registry.collect() for s in f.samples if s.labels.get("version") == "1"
    ]
    assert gone == [], "version 1's series must go with it"
    assert served.registry.get_sample_value("foldserve_model_info", info) is None


def test_a_corrupt_version_is_refused_and_the_old_one_keeps_serving(
    serve: ServeFactory, repo: Path
) -> None:
    served = serve(repo, keep_versions=1, poll_seconds=0)
    bad = repo / "3" / "model.onnx"
    bad.parent.mkdir()
    bad.write_bytes((repo / "2" / "model.onnx").read_bytes()[:200])  # a half-copied file
    served.running.repository.refresh()
    assert versions(served) == ["2"]
    assert predict_version(served) == "2"
    model = {"model": "foldserve"}
    assert served.registry.get_sample_value("foldserve_model_versions_refused", model) == 1
    assert served.registry.get_sample_value("foldserve_model_versions_loaded", model) == 1
    assert served.registry.get_sample_value("foldserve_model_reload_failures_total", model) == 1
    stub = v2_grpc.GRPCInferenceServiceStub(served.channel)
    index = stub.RepositoryIndex(v2.RepositoryIndexRequest(), timeout=5).models
    states = {(m.version, m.state) for m in index}
    assert states == {("2", "READY"), ("3", "UNAVAILABLE")}
    assert "not a loadable ONNX model" in next(m.reason for m in index if m.version == "3")
    ready = stub.RepositoryIndex(v2.RepositoryIndexRequest(ready=True), timeout=5).models
    assert [m.version for m in ready] == ["2"]
    served.running.repository.refresh()  # unchanged file: not tried (or counted) again
    assert served.registry.get_sample_value("foldserve_model_reload_failures_total", model) == 1
    time.sleep(0.01)
    add_version(repo, 3)  # the copy completes
    served.running.repository.refresh()
    assert versions(served) == ["3"]
    assert served.registry.get_sample_value("foldserve_model_versions_refused", model) == 0


def test_a_serving_version_whose_file_turns_bad_keeps_serving(
    serve: ServeFactory, repo: Path
) -> None:
    """A loaded version's file truncated (or its config.pbtxt rewritten invalid): the copy loaded
    before keeps answering, as Triton keeps a model whose reload fails, and the index says why;
    a good file replaces it."""
    served = serve(repo, keep_versions=2, poll_seconds=0)
    good, stamp = (repo / "2" / "model.onnx").read_bytes(), (repo / "2" / "model.onnx").stat()
    (repo / "2" / "model.onnx").write_bytes(good[: len(good) // 2])
    served.running.repository.refresh()
    served.running.repository.refresh()  # the refusal is remembered: still kept
    assert versions(served) == ["2", "1"]
    assert predict_version(served, "2") == "2"
    stub = v2_grpc.GRPCInferenceServiceStub(served.channel)
    index = stub.RepositoryIndex(v2.RepositoryIndexRequest(), timeout=5).models
    assert [(m.version, m.state) for m in index] == [("2", "READY"), ("1", "READY")]
    assert index[0].reason.startswith("serving the copy loaded before; its file changed")
    assert "not a loadable ONNX model" in index[0].reason
    time.sleep(0.01)
    (repo / "2" / "model.onnx").write_bytes(good)  # the very file loaded before, back
    os.utime(repo / "2" / "model.onnx", ns=(stamp.st_atime_ns, stamp.st_mtime_ns))
    served.running.repository.refresh()
    index = stub.RepositoryIndex(v2.RepositoryIndexRequest(), timeout=5).models
    ready = [("2", "READY", ""), ("1", "READY", "")]
    assert [(m.version, m.state, m.reason) for m in index] == ready
    add_version(repo, 2, seed=9)  # a new good file replaces it
    served.running.repository.refresh()
    index = stub.RepositoryIndex(v2.RepositoryIndexRequest(), timeout=5).models
    assert [(m.version, m.state, m.reason) for m in index] == ready
    (repo / "config.pbtxt").write_text("version_policy: {")
    served.running.repository.refresh()
    index = stub.RepositoryIndex(v2.RepositoryIndexRequest(), timeout=5).models
    assert all("the changed config.pbtxt is refused" in m.reason for m in index), index
    assert predict_version(served, "2") == "2"


def test_no_call_fails_while_versions_swap_under_load(serve: ServeFactory, repo: Path) -> None:
    served = serve(repo, keep_versions=1, poll_seconds=0)
    stop = threading.Event()
    outcomes: Counter = Counter()
    lock = threading.Lock()

    def client() -> None:
        stub = pb_grpc.PredictorStub(served.channel)
        while not stop.is_set():
            try:
                reply = stub.Predict(FEATURES, timeout=5)
                key = f"version {reply.model_version}"
            except grpc.RpcError as exc:
                key = exc.code().name
            with lock:
                outcomes[key] += 1

    threads = [threading.Thread(target=client) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        for version in range(3, 8):
            time.sleep(0.15)
            add_version(repo, version)
            shutil.rmtree(repo / str(version - 2))
            served.running.reloader.trigger()
        time.sleep(0.3)
    finally:
        stop.set()
        for thread in threads:
            thread.join(10)
    errors = {k: n for k, n in outcomes.items() if not k.startswith("version")}
    assert errors == {}, outcomes
    assert {f"version {v}" for v in range(3, 8)} <= set(outcomes), outcomes
    assert versions(served) == ["7"]


def test_a_version_removed_from_disk_is_unloaded_but_never_the_last(
    serve: ServeFactory, repo: Path
) -> None:
    served = serve(repo, keep_versions=2, poll_seconds=0)
    shutil.rmtree(repo / "2")
    served.running.repository.refresh()
    assert versions(served) == ["1"]
    shutil.rmtree(repo / "1")
    served.running.repository.refresh()
    assert versions(served) == ["1"]
    assert predict_version(served) == "1"


def test_a_single_model_file_is_reloaded_when_it_changes(
    serve: ServeFactory, tmp_path: Path
) -> None:
    from tests.service.model_files import metadata

    path = write_tiny_model(tmp_path / "model.onnx", seed=1)
    served = serve(path, poll_seconds=0)
    assert predict_version(served) == "20250101T000000Z"
    labels = [f"class_{i}" for i in range(10)]
    write_tiny_model(tmp_path / "next.onnx", seed=2, meta=metadata((64,), labels, version="v2"))
    (tmp_path / "next.onnx").replace(path)
    served.running.repository.refresh()
    assert versions(served) == ["v2"]
    assert predict_version(served) == "v2"


def test_polling_finds_a_new_version_without_a_signal(serve: ServeFactory, repo: Path) -> None:
    served = serve(repo, poll_seconds=0.05)
    add_version(repo, 3)
    deadline = time.monotonic() + 10
    while versions(served)[0] != "3":
        assert time.monotonic() < deadline, "the new version was never loaded"
        time.sleep(0.02)
    assert predict_version(served) == "3"


def test_predictions_of_each_version_come_from_its_own_file(
    serve: ServeFactory, repo: Path
) -> None:
    served = serve(repo, keep_versions=2)
    stub = pb_grpc.PredictorStub(served.channel)
    for loaded in served.running.repository.model().versions:
        x = np.linspace(-2, 2, 64, dtype=np.float32)
        expected = loaded.model.run_classifier(x.reshape(1, 64))["probabilities"][0]
        reply = stub.Predict(
            pb.PredictRequest(features=x.tolist(), model_version=loaded.version), timeout=5
        )
        np.testing.assert_array_equal(np.array(reply.probabilities, np.float32), expected)


TRITON_SCRIPT = """
import json, sys
import numpy as np
import tritonclient.grpc as triton
client = triton.InferenceServerClient(sys.argv[1])
index = client.get_model_repository_index(as_json=True).get("models", [])
x = triton.InferInput("input", [1, 64], "FP32")
x.set_data_from_numpy(np.zeros((1, 64), np.float32))
answer = client.infer("foldserve", [x]).get_response().model_version
print(json.dumps({"index": [[m["version"], m["state"]] for m in index], "answer": answer}))
"""


def triton_view(target: str) -> dict:
    """The repository index and the answering version, as tritonclient sees them (in a process
    of its own: its generated protos share our package name)."""
    import json
    import subprocess
    import sys

    from tests.service.subprocess_server import REPO, env

    result = subprocess.run(
        [sys.executable, "-c", TRITON_SCRIPT, target],
        capture_output=True, text=True, cwd=REPO, env=env(), timeout=60, check=True,
    )  # fmt: skip
    return json.loads(result.stdout)


def test_sighup_reloads_a_running_server(repo: Path, tmp_path: Path) -> None:
    import signal

    from tests.service.subprocess_server import server_process

    with server_process(repo, tmp_path, ["--poll-seconds", "0"]) as server:
        before = triton_view(server.target)
        assert before == {"index": [["2", "READY"], ["1", "READY"]], "answer": "2"}
        add_version(repo, 3)
        server.process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while "loaded model foldserve version 3" not in server.stderr():
            assert time.monotonic() < deadline, server.stderr()
            time.sleep(0.05)
        after = triton_view(server.target)
        assert after == {"index": [["3", "READY"], ["2", "READY"]], "answer": "3"}
        assert server.terminate() == 0
