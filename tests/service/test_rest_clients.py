"""V2 REST served to the clients people use, unchanged: Triton's `tritonclient.http` and KServe's
`InferenceRESTClient`, each over every endpoint it has, every datatype in JSON and in binary."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator

import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from tests.service.foreign_files import write_every_datatype_model
from tests.service.rest_server import RestServer, start_rest
from tests.service.subprocess_server import REPO, env
from tests.service.test_rest_tensors import VALUES

TOKEN = "client-token"
MODEL = "foldserve"


@pytest.fixture(scope="module")
def every(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RestServer]:
    """A server of a model with one input and one output of every datatype, behind a token."""
    path = write_every_datatype_model(tmp_path_factory.mktemp("every") / "model.onnx")
    server = start_rest(path, token=TOKEN)
    yield server
    server.stop()


@pytest.fixture
def client(every: RestServer) -> Iterator[triton.InferenceServerClient]:
    found = triton.InferenceServerClient(
        f"127.0.0.1:{every.port}", connection_timeout=10, network_timeout=10
    )
    yield found
    found.close()


def auth() -> dict[str, str]:
    """The token header, a new dict each call: tritonclient's `infer` writes its own headers into
    the dict it is given."""
    return {"Authorization": f"Bearer {TOKEN}"}


def test_tritonclient_health_and_metadata(client, every: RestServer) -> None:
    assert client.is_server_live(headers=auth())
    assert client.is_server_ready(headers=auth())
    assert client.is_model_ready(MODEL, headers=auth())
    version = every.plane.repository.model().latest.version
    assert client.is_model_ready(MODEL, model_version=version, headers=auth())
    assert not client.is_model_ready("other", headers=auth())
    assert client.is_server_live() and client.is_server_ready()  # probes need no token
    assert not client.is_model_ready(MODEL)  # the rest does: 401, read as not ready
    metadata = client.get_server_metadata(headers=auth())
    assert metadata["name"] == "foldserve" and "binary_tensor_data" in metadata["extensions"]
    model = client.get_model_metadata(MODEL, headers=auth())
    assert [t["name"] for t in model["inputs"]] == [f"x_{name}" for name in VALUES]
    assert {t["datatype"] for t in model["outputs"]} == set(VALUES)
    index = client.get_model_repository_index(headers=auth())
    assert index == [{"name": MODEL, "version": version, "state": "READY", "reason": ""}]


@pytest.mark.parametrize("binary_out", [False, True], ids=["json-out", "binary-out"])
@pytest.mark.parametrize("binary_in", [False, True], ids=["json-in", "binary-in"])
def test_tritonclient_infers_every_datatype(client, binary_in: bool, binary_out: bool) -> None:
    inputs = []
    for name, values in VALUES.items():
        tensor = triton.InferInput(f"x_{name}", list(values.shape), name)
        tensor.set_data_from_numpy(values, binary_data=binary_in)
        inputs.append(tensor)
    outputs = [triton.InferRequestedOutput(f"y_{n}", binary_data=binary_out) for n in VALUES]
    result = client.infer(MODEL, inputs, outputs=outputs, request_id="t-1", headers=auth())
    assert result.get_response()["id"] == "t-1"
    for name, values in VALUES.items():
        got = result.as_numpy(f"y_{name}")
        assert got.dtype == values.dtype, name
        np.testing.assert_array_equal(got, values, err_msg=name)


def test_tritonclient_without_outputs_gets_every_output_in_binary(client) -> None:
    inputs = []
    for name, values in VALUES.items():
        tensor = triton.InferInput(f"x_{name}", list(values.shape), name)
        inputs.append(tensor.set_data_from_numpy(values))
    result = client.infer(MODEL, inputs, headers=auth())
    for output in result.get_response()["outputs"]:
        assert "binary_data_size" in output["parameters"]
    np.testing.assert_array_equal(result.as_numpy("y_INT64"), VALUES["INT64"])


def test_tritonclient_sees_the_status_and_the_message(client) -> None:
    tensor = triton.InferInput("x_FP32", [2, 3], "FP64")
    tensor.set_data_from_numpy(VALUES["FP64"], binary_data=False)
    with pytest.raises(InferenceServerException) as caught:
        client.infer(MODEL, [tensor], headers=auth())
    assert caught.value.status() == "400"
    assert caught.value.message().startswith("inputs[0].datatype: input 'x_FP32' is FP32")
    with pytest.raises(InferenceServerException) as caught:
        client.get_model_metadata("other", headers=auth())
    assert caught.value.status() == "404"
    with pytest.raises(InferenceServerException) as caught:
        client.get_server_metadata()
    assert caught.value.status() == "401"


# KServe's package registers its own copy of the V2 protos (package `inference`) in protobuf's
# default pool, which foldserve's already hold in this process: its client runs in a fresh one.
KSERVE = textwrap.dedent("""
    import asyncio, json, sys
    import numpy as np
    from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig
    from kserve.protocol.infer_type import RequestedOutput

    url, token, values = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    auth = {"Authorization": f"Bearer {token}"}
    DTYPES = {"BOOL": "bool", "FP16": "float16", "FP32": "float32", "FP64": "float64"}

    def array(name, data):
        return np.array(data, DTYPES.get(name, name.lower()))

    async def infer(client, binary):
        inputs = []
        for name, data in values.items():
            tensor = InferInput(f"x_{name}", [2, 3], name)
            # KServe's client sends FP16 in binary only.
            tensor.set_data_from_numpy(array(name, data), binary_data=binary or name == "FP16")
            inputs.append(tensor)
        outputs = [RequestedOutput(f"y_{n}", parameters={"binary_data": binary}) for n in values]
        request = InferRequest("foldserve", inputs, request_id="k-1", request_outputs=outputs)
        response = await client.infer(url, request, model_name="foldserve", headers=dict(auth))
        found = {o.name: o.as_numpy() for o in response.outputs}
        return {"id": response.id,
                "outputs": {k: [str(v.dtype), v.tolist()] for k, v in found.items()}}

    async def main():
        client = InferenceRESTClient(RESTConfig(protocol="v2", retries=0, timeout=10))
        try:
            answers = {
                "live": await client.is_server_live(url, headers=auth),
                "ready": await client.is_server_ready(url, headers=auth),
                "model_ready": await client.is_model_ready(url, "foldserve", headers=auth),
                "other_ready": await client.is_model_ready(url, "other", headers=auth),
                "json": await infer(client, False),
                "binary": await infer(client, True),
            }
        finally:
            await client.close()
        print(json.dumps(answers))

    asyncio.run(main())
""")


def test_kserve_rest_client(every: RestServer) -> None:
    values = json.dumps({name: array.tolist() for name, array in VALUES.items()})
    result = subprocess.run(
        [sys.executable, "-c", KSERVE, every.url, TOKEN, values],
        capture_output=True, text=True, cwd=REPO, env=env(), timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    answers = json.loads(result.stdout.strip().splitlines()[-1])
    assert answers["live"] and answers["ready"] and answers["model_ready"]
    assert answers["other_ready"] is False
    for mode in ("json", "binary"):
        assert answers[mode]["id"] == "k-1"
        outputs = answers[mode]["outputs"]
        assert list(outputs) == [f"y_{name}" for name in VALUES]
        for name, values in VALUES.items():
            dtype, data = outputs[f"y_{name}"]
            assert dtype == str(values.dtype), (mode, name)
            np.testing.assert_array_equal(np.array(data, values.dtype), values, err_msg=name)
