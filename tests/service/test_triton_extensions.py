"""Triton's model configuration and statistics extensions, driven through tritonclient.grpc (in a
child process: its generated protos share our package names) and tritonclient.http, against a
repository of several models, one of them configured by a Triton config.pbtxt. KServe's clients
have neither call."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from foldserve._proto.foldserve.v1 import predictor_pb2 as pb
from foldserve._proto.foldserve.v1 import predictor_pb2_grpc as pb_grpc
from foldserve._proto.inference import grpc_predict_v2_pb2 as v2
from foldserve._proto.inference import grpc_predict_v2_pb2_grpc as v2_grpc
from foldserve.server.config import ServeConfig
from foldserve.server.workers import worker_config
from tests.service.conftest import Served, ServeFactory
from tests.service.subprocess_server import REPO, env
from tests.service.triton_repository import write_triton_repository

INSTANCES = 3  # as if served by three worker processes

GRPC_SCRIPT = """
import json, sys
import numpy as np
import tritonclient.grpc as triton
from tritonclient.utils import InferenceServerException
client = triton.InferenceServerClient(sys.argv[1])
def features(rows):
    x = triton.InferInput("features", [rows, 5], "FP32")
    x.set_data_from_numpy(np.ones((rows, 5), np.float32))
    return [x]
errors = []
for rows in json.loads(sys.argv[2]):
    try:
        client.infer("animals", features(rows))
    except InferenceServerException as exc:
        errors.append(exc.status())
print(json.dumps({
    "errors": errors,
    "configs": {n: client.get_model_config(n, as_json=True)["config"]
                for n in ("densenet_onnx", "animals", "masked", "foldserve")},
    "version_1": client.get_model_config("animals", "1", as_json=True)["config"],
    "stats": client.get_inference_statistics("animals", as_json=True),
    "all": client.get_inference_statistics(as_json=True),
}))
"""


def tritonclient_grpc(served: Served, batches: list[int]) -> dict:
    """Infer `batches` (rows of animals' features) with tritonclient.grpc, then read configs and
    statistics with it."""
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(GRPC_SCRIPT), f"127.0.0.1:{served.port}",
         json.dumps(batches)],
        capture_output=True, text=True, cwd=REPO, env=env(), timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture
def served(tmp_path: Path, serve: ServeFactory) -> Served:
    root = write_triton_repository(tmp_path / "models")
    return serve(model_repository=str(root), workers=1, instances=INSTANCES, poll_seconds=0)


@pytest.fixture
def client(served: Served) -> triton.InferenceServerClient:
    return triton.InferenceServerClient(f"127.0.0.1:{served.running.http_port}")


DENSENET = {
    "name": "densenet_onnx",
    "platform": "onnxruntime_onnx",
    "backend": "onnxruntime",
    "runtime": "",
    "max_batch_size": 0,
    "version_policy": {"latest": {"num_versions": 2}},  # none in config.pbtxt: --keep-versions
    "input": [
        {"name": "data_0", "data_type": "TYPE_FP32", "dims": [3, 4, 4], "optional": False,
         "reshape": {"shape": [1, 3, 4, 4]}},
    ],
    "output": [
        {"name": "fc6_1", "data_type": "TYPE_FP32", "dims": [10],
         "reshape": {"shape": [1, 10, 1, 1]}, "label_filename": "densenet_labels.txt"},
    ],
    "instance_group": [{"name": "densenet_onnx", "kind": "KIND_CPU", "count": INSTANCES}],
    "default_model_filename": "model.onnx",
    "parameters": {},
}  # fmt: skip


def essential(config: dict) -> dict:
    """What a config says, whoever wrote its JSON: Triton's HTTP JSON (every field, 64-bit
    integers as numbers), or protobuf's (tritonclient.grpc's as_json: defaults left out, 64-bit
    integers as strings)."""

    def ints(values) -> list[int]:
        return [int(v) for v in values]

    def tensor(found: dict) -> tuple:
        reshape = found.get("reshape")
        shape = None if reshape is None else ints(reshape.get("shape", ()))
        label = found.get("label_filename", "")
        return found["name"], found["data_type"], ints(found.get("dims", ())), shape, label

    policy = config["version_policy"]
    (kind,) = policy
    return {
        **{k: config.get(k, "") for k in ("name", "platform", "backend")},
        "max_batch_size": config.get("max_batch_size", 0),
        "version_policy": (kind, {k: ints(v) if k == "versions" else v
                                  for k, v in policy[kind].items()}),
        "input": [tensor(t) for t in config.get("input", ())],
        "output": [tensor(t) for t in config.get("output", ())],
        "instance_group": config["instance_group"],
        "default_model_filename": config["default_model_filename"],
    }  # fmt: skip


def test_model_config_as_triton_reports_it(served: Served, client) -> None:
    assert client.get_model_config("densenet_onnx") == DENSENET
    animals = client.get_model_config("animals")
    assert animals["max_batch_size"] == 8
    assert animals["version_policy"] == {"specific": {"versions": [1, 3]}}
    assert animals["input"] == [
        {"name": "features", "data_type": "TYPE_FP32", "dims": [5], "optional": False}
    ]
    assert animals["output"] == [
        {"name": "scores", "data_type": "TYPE_FP32", "dims": [3], "label_filename": "labels.txt"}
    ]
    assert animals["instance_group"] == [{"name": "animals", "kind": "KIND_CPU", "count": 3}]
    masked = client.get_model_config("masked")  # nothing declared: the graph's, batch left out
    assert (masked["default_model_filename"], masked["max_batch_size"]) == ("net.onnx", 4)
    assert [(t["name"], t["data_type"], t["dims"]) for t in masked["input"]] == [
        ("x", "TYPE_FP32", [4]),
        ("mask", "TYPE_BOOL", [4]),
    ]
    assert masked["version_policy"] == {"latest": {"num_versions": 2}}
    plain = client.get_model_config("foldserve")  # no config.pbtxt: the graph's full shapes
    assert plain["max_batch_size"] == 0
    assert plain["input"][0]["dims"] == [-1, 64]
    assert client.get_model_config("animals", "1")["name"] == "animals"
    seen = tritonclient_grpc(served, [])
    for name, config in seen["configs"].items():
        assert essential(config) == essential(client.get_model_config(name)), name
    assert essential(seen["version_1"]) == essential(client.get_model_config("animals", "1"))


def test_server_metadata_names_the_extensions(client) -> None:
    extensions = client.get_server_metadata()["extensions"]
    assert {"model_configuration", "statistics"} <= set(extensions)


def test_model_config_errors(served: Served, client) -> None:
    for args, message in ((("zoo",), "unknown model 'zoo'"), (("animals", "2"), "version '2'")):
        with pytest.raises(InferenceServerException) as caught:
            client.get_model_config(*args)
        assert caught.value.status() == "404" and message in str(caught.value)
    stub = v2_grpc.GRPCInferenceServiceStub(served.channel)
    with pytest.raises(grpc.RpcError) as refused:
        stub.ModelConfig(v2.ModelConfigRequest(name="animals", version="2"), timeout=5)
    assert refused.value.code() == grpc.StatusCode.NOT_FOUND
    assert "version: unknown version '2' of model 'animals'" in refused.value.details()


def features(rows: int, datatype: str = "FP32") -> list[triton.InferInput]:
    x = triton.InferInput("features", [rows, 5], datatype)
    x.set_data_from_numpy(np.ones((rows, 5), np.float32 if datatype == "FP32" else np.float64))
    return [x]


def counts(stat: dict) -> dict:
    """A version's statistics without the times: (count) per duration, and the totals."""
    found = {k: int(v.get("count", 0)) for k, v in stat["inference_stats"].items()}
    return {**found, "inference": int(stat.get("inference_count", 0)),
            "execution": int(stat.get("execution_count", 0))}  # fmt: skip


def test_statistics_count_every_call_exactly(served: Served, client) -> None:
    started = time.time() * 1000
    for rows in (2, 1, 8):
        client.infer("animals", features(rows))  # version 3, the newest
    client.infer("animals", features(4), model_version="1")
    for bad in (features(9), features(2, "FP64")):  # batch over 8; the wrong datatype
        with pytest.raises(InferenceServerException):
            client.infer("animals", bad)
    with pytest.raises(InferenceServerException):  # names no served model: counted nowhere
        client.infer("zoo", features(1))
    stub = pb_grpc.PredictorStub(served.channel)
    stub.Predict(pb.PredictRequest(model_name="animals", features=[0.5] * 5), timeout=5)
    seen = tritonclient_grpc(served, [3, 1, 9])
    assert seen["errors"] == ["StatusCode.INVALID_ARGUMENT"]
    stats = client.get_inference_statistics("animals")["model_stats"]
    assert [(s["name"], s["version"]) for s in stats] == [("animals", "3"), ("animals", "1")]
    # Version 3: 6 answered (3 over HTTP, 1 Predict, 2 over gRPC), 3 refused after naming it.
    phases = {"queue": 6, "compute_input": 6, "compute_infer": 6, "compute_output": 6}
    assert counts(stats[0]) == {
        "success": 6, "fail": 3, **phases, "inference": 2 + 1 + 8 + 1 + 3 + 1, "execution": 6
    }  # fmt: skip
    one = {"queue": 1, "compute_input": 1, "compute_infer": 1, "compute_output": 1}
    assert counts(stats[1]) == {"success": 1, "fail": 0, **one, "inference": 4, "execution": 1}
    newest = stats[0]
    assert started <= newest["last_inference"] <= time.time() * 1000
    durations = newest["inference_stats"]
    assert durations["compute_infer"]["ns"] > 0 and durations["fail"]["ns"] > 0
    parts = sum(durations[k]["ns"] for k in phases)
    assert abs(parts - durations["success"]["ns"]) <= 4 * 6  # the phases split each call
    grpc_stats = seen["stats"]["model_stats"]  # read after every call, as HTTP reads them
    assert counts(grpc_stats[0]) == counts(newest)
    assert [counts(s) for s in client.get_inference_statistics("animals", "1")["model_stats"]] == [
        counts(stats[1])
    ]
    everything = client.get_inference_statistics()["model_stats"]
    assert [(s["name"], s["version"]) for s in everything] == [
        ("animals", "3"), ("animals", "1"), ("densenet_onnx", "1"), ("foldserve", "1"),
        ("masked", "3"), ("masked", "2"),
    ]  # fmt: skip
    assert [counts(s) for s in seen["all"]["model_stats"][:2]] == [counts(s) for s in stats]
    assert counts(everything[2])["success"] == 0


def test_statistics_errors(served: Served, client) -> None:
    for args, message in ((("zoo",), "unknown model 'zoo'"), (("animals", "2"), "version '2'")):
        with pytest.raises(InferenceServerException) as caught:
            client.get_inference_statistics(*args)
        assert caught.value.status() == "404" and message in str(caught.value)
    stub = v2_grpc.GRPCInferenceServiceStub(served.channel)
    with pytest.raises(grpc.RpcError) as refused:
        stub.ModelStatistics(v2.ModelStatisticsRequest(version="1"), timeout=5)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "version: '1' given without name" in refused.value.details()


def test_each_worker_reports_every_worker_as_an_instance() -> None:
    config = ServeConfig(model="m", workers=3)
    assert worker_config(config, (1, 2)).instances == 3


def test_each_stream_message_counts_as_a_call(served: Served) -> None:
    stub = v2_grpc.GRPCInferenceServiceStub(served.channel)

    def request(rows: int) -> v2.ModelInferRequest:
        tensor = v2.ModelInferRequest.InferInputTensor(
            name="features", datatype="FP32", shape=[rows, 5]
        )
        tensor.contents.fp32_contents.extend([0.5] * rows * 5)
        return v2.ModelInferRequest(model_name="animals", inputs=[tensor])

    answers = list(stub.ModelStreamInfer(iter([request(2), request(9), request(3)]), timeout=10))
    assert [bool(a.error_message) for a in answers] == [False, True, False]
    (stats,) = stub.ModelStatistics(
        v2.ModelStatisticsRequest(name="animals", version="3"), timeout=5
    ).model_stats
    durations = stats.inference_stats
    assert (durations.success.count, durations.fail.count) == (2, 1)
    assert (stats.inference_count, stats.execution_count) == (5, 2)
    assert durations.compute_output.count == 2 and durations.compute_infer.ns > 0
