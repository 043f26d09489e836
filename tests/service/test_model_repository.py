"""A repository of many models (`--model-repository`, Triton's layout), through Triton's and our own
clients: every model served by name with its own versions, one model's failure never another's,
the model control modes, and loading and unloading under load without a failed call elsewhere.

tritonclient.grpc registers Triton's own copy of the `inference` protos, which cannot share a
process with ours: its calls run in a child process (`triton_grpc`); tritonclient.http runs here.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import textwrap
import threading
from collections import Counter
from pathlib import Path

import grpc
import numpy as np
import pytest
import tritonclient.http as triton_http
from tritonclient.utils import InferenceServerException

from foldserve._proto.foldserve.v1 import predictor_pb2 as pb
from foldserve._proto.foldserve.v1 import predictor_pb2_grpc as pb_grpc
from foldserve._proto.inference import grpc_predict_v2_pb2 as v2
from foldserve._proto.inference import grpc_predict_v2_pb2_grpc as v2_grpc
from tests.service.conftest import ServeFactory
from tests.service.foreign_files import write_logits_model, write_masked_model
from tests.service.model_files import write_tiny_model
from tests.service.subprocess_server import REPO, env

WEIGHTS = np.arange(15, dtype=np.float32).reshape(5, 3) / 10


def make_repository(root: Path) -> Path:
    """digits (foldserve metadata, versions 1 and 2), logits (a classifier foldserve did not
    train), masked (two inputs, FP32 and BOOL) and broken (a file that is no model)."""
    for version in ("1", "2"):
        (root / "digits" / version).mkdir(parents=True)
        write_tiny_model(root / "digits" / version / "model.onnx")
    write_logits_model(root / "logits" / "1" / "model.onnx", WEIGHTS)
    write_masked_model(root / "masked" / "3" / "model.onnx")
    (root / "broken" / "1").mkdir(parents=True)
    (root / "broken" / "1" / "model.onnx").write_bytes(b"not onnx")
    return root


def triton_grpc(target: str, body: str) -> dict:
    """Run `body` with `client` (a tritonclient.grpc client of `target`) in a child process;
    what it leaves in `out` (a dict), back as JSON."""
    script = "import json, sys\nimport numpy as np\nimport tritonclient.grpc as triton\n"
    script += "from tritonclient.utils import InferenceServerException\n"
    script += "client = triton.InferenceServerClient(sys.argv[1])\nout = {}\n"
    script += textwrap.dedent(body) + "\nprint(json.dumps(out))\n"
    done = subprocess.run(
        [sys.executable, "-c", script, target],
        capture_output=True, text=True, cwd=REPO, env=env(), timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def _infer_digits(client: triton_http.InferenceServerClient, version: str = "") -> np.ndarray:
    values = triton_http.InferInput("input", [1, 64], "FP32")
    values.set_data_from_numpy(np.full((1, 64), 0.5, np.float32))
    return client.infer("digits", [values], model_version=version).as_numpy("probabilities")


def test_every_model_is_served_by_name_and_a_broken_one_is_listed(
    tmp_path: Path, serve: ServeFactory
) -> None:
    served = serve(None, model_repository=str(make_repository(tmp_path / "models")))
    got = triton_grpc(
        f"127.0.0.1:{served.port}",
        """
        out["ready"] = [client.is_model_ready(n) for n in ("digits", "logits", "broken")]
        out["versions"] = list(client.get_model_metadata("digits").versions)
        values = triton.InferInput("input", [1, 64], "FP32")
        values.set_data_from_numpy(np.full((1, 64), 0.5, np.float32))
        out["digits"] = client.infer("digits", [values], model_version="1").as_numpy(
            "probabilities").shape
        features = triton.InferInput("features", [2, 5], "FP32")
        features.set_data_from_numpy(np.ones((2, 5), np.float32))
        out["scores"] = client.infer("logits", [features]).as_numpy("scores").tolist()
        out["index"] = client.get_model_repository_index(as_json=True)["models"]
        """,
    )
    assert got["ready"] == [True, True, False]
    assert got["versions"] == ["2", "1"] and got["digits"] == [1, 10]
    np.testing.assert_allclose(got["scores"], np.ones((2, 5)) @ WEIGHTS, rtol=1e-6)
    index = {(m["name"], m.get("version", "")): m for m in got["index"]}
    assert {key for key, m in index.items() if m.get("state") == "READY"} == {
        ("digits", "2"),
        ("digits", "1"),
        ("logits", "1"),
        ("masked", "3"),
    }
    assert index[("broken", "")]["state"] == "UNAVAILABLE"
    assert "not a loadable ONNX model" in index[("broken", "")]["reason"]
    http = triton_http.InferenceServerClient(f"127.0.0.1:{served.running.http_port}")
    assert http.is_model_ready("masked", "3") and not http.is_model_ready("broken")
    assert _infer_digits(http).shape == (1, 10)
    sample = served.registry.get_sample_value
    for name, version in (("digits", "2"), ("logits", "1"), ("masked", "3")):
        assert sample("foldserve_model_versions_loaded", {"model": name}) >= 1
        assert sample("foldserve_requests_in_flight", {"model": name, "version": version}) == 0


def test_a_name_is_required_when_several_models_serve_unless_one_is_the_default(
    tmp_path: Path, serve: ServeFactory
) -> None:
    root = make_repository(tmp_path / "models")
    served = serve(None, model_repository=str(root))
    stub = pb_grpc.PredictorStub(served.channel)
    with pytest.raises(grpc.RpcError) as caught:
        stub.Predict(pb.PredictRequest(features=[0.5] * 64), timeout=5)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "model_name: required: this server serves 3 models" in caught.value.details()
    named = stub.Predict(pb.PredictRequest(features=[0.5] * 64, model_name="digits"), timeout=5)
    assert (named.model_name, named.model_version) == ("digits", "2")
    default = serve(None, model_repository=str(root), default_model="logits")
    stub = pb_grpc.PredictorStub(default.channel)
    assert stub.Predict(pb.PredictRequest(features=[0.0] * 5), timeout=5).model_name == "logits"


def test_explicit_mode_loads_and_unloads_what_clients_ask(
    tmp_path: Path, serve: ServeFactory
) -> None:
    root = make_repository(tmp_path / "models")
    served = serve(
        None, model_repository=str(root), model_control_mode="explicit", load_model=("digits",)
    )
    got = triton_grpc(
        f"127.0.0.1:{served.port}",
        """
        out["before"] = [client.is_model_ready(n) for n in ("digits", "logits")]
        models = client.get_model_repository_index(as_json=True)["models"]
        out["states"] = {m["name"]: m.get("state", "") for m in models}
        client.load_model("logits")
        out["loaded"] = client.is_model_ready("logits")
        for name in ("broken", "nope"):
            try:
                client.load_model(name)
            except InferenceServerException as exc:
                out[name] = str(exc)
        client.unload_model("logits")
        out["unloaded"] = client.is_model_ready("logits")
        """,
    )
    assert got["before"] == [True, False] and got["loaded"] and not got["unloaded"]
    assert got["states"]["logits"] == "" and got["states"]["masked"] == ""  # not loaded
    assert "failed to load" in got["broken"]
    assert "no model 'nope' in the repository" in got["nope"]
    http = triton_http.InferenceServerClient(f"127.0.0.1:{served.running.http_port}")
    http.load_model("masked")
    assert http.is_model_ready("masked", "3")
    http.unload_model("masked")
    assert not http.is_model_ready("masked")
    with pytest.raises(InferenceServerException, match="is not loaded"):
        http.unload_model("masked")
    assert _infer_digits(http).shape == (1, 10)


def test_model_control_is_refused_outside_the_explicit_mode(
    tmp_path: Path, serve: ServeFactory, tiny_model_path: Path
) -> None:
    served = serve(None, model_repository=str(make_repository(tmp_path / "models")))
    stub = v2_grpc.GRPCInferenceServiceStub(served.channel)
    for call, request in (
        (stub.RepositoryModelLoad, v2.RepositoryModelLoadRequest(model_name="logits")),
        (stub.RepositoryModelUnload, v2.RepositoryModelUnloadRequest(model_name="logits")),
    ):
        with pytest.raises(grpc.RpcError) as caught:
            call(request, timeout=5)
        assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "model control mode 'none'" in caught.value.details()
    single = serve(tiny_model_path)
    stub = v2_grpc.GRPCInferenceServiceStub(single.channel)
    with pytest.raises(grpc.RpcError) as caught:
        stub.RepositoryModelLoad(v2.RepositoryModelLoadRequest(model_name="x"), timeout=5)
    assert "serving one model (--model)" in caught.value.details()


def test_poll_mode_follows_the_directory(tmp_path: Path, serve: ServeFactory) -> None:
    root = make_repository(tmp_path / "models")
    shutil.rmtree(root / "masked")
    served = serve(None, model_repository=str(root), model_control_mode="poll", poll_seconds=0)
    repository = served.running.repository
    assert repository.names == ["digits", "logits"]
    write_masked_model(root / "masked" / "1" / "model.onnx")
    shutil.rmtree(root / "logits")
    repository.refresh()
    assert repository.names == ["digits", "masked"]
    client = triton_http.InferenceServerClient(f"127.0.0.1:{served.running.http_port}")
    assert client.is_model_ready("masked") and not client.is_model_ready("logits")


def test_load_and_unload_under_load_fail_no_call_to_other_models(
    tmp_path: Path, serve: ServeFactory
) -> None:
    """64 calls in flight to `digits` while `logits` is loaded and unloaded again and again:
    every call to `digits` answers OK."""
    root = make_repository(tmp_path / "models")
    served = serve(
        None, model_repository=str(root), model_control_mode="explicit", load_model=("digits",)
    )
    stop = threading.Event()
    cycles = Counter()

    def control() -> None:
        client = triton_http.InferenceServerClient(f"127.0.0.1:{served.running.http_port}")
        while not stop.is_set() and cycles["unload"] < 20:
            client.load_model("logits")
            cycles["load"] += 1
            client.unload_model("logits")
            cycles["unload"] += 1

    thread = threading.Thread(target=control)
    thread.start()
    try:
        codes = asyncio.run(_load(f"127.0.0.1:{served.port}", calls=3000, in_flight=64))
    finally:
        stop.set()
        thread.join(60)
    assert cycles["unload"] >= 3, cycles
    assert codes == Counter({"OK": 3000}), codes


async def _load(target: str, calls: int, in_flight: int) -> Counter:
    codes: Counter = Counter()
    request = pb.PredictRequest(features=[0.5] * 64, model_name="digits")
    async with grpc.aio.insecure_channel(target) as channel:
        stub = pb_grpc.PredictorStub(channel)
        left = iter(range(calls))

        async def worker() -> None:
            for _ in left:
                try:
                    await stub.Predict(request, timeout=30)
                    codes["OK"] += 1
                except grpc.aio.AioRpcError as exc:
                    codes[exc.code().name] += 1

        await asyncio.gather(*(worker() for _ in range(in_flight)))
    return codes
