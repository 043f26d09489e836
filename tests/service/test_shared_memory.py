"""Triton's system shared memory extension, driven through tritonclient over gRPC and HTTP
(`tests/service/shm_scenarios.py`): regions registered, tensors of every datatype read from and
written to them, every misuse answered with an error naming what is wrong, and no byte outside
what the server was asked to write changed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import tritonclient.http

from tests.service import shm_scenarios
from tests.service.conftest import Served, ServeFactory
from tests.service.foreign_files import write_every_datatype_model, write_masked_model
from tests.service.subprocess_server import REPO, env

PROTOCOLS = ("grpc", "http")


def run(protocol: str, served: Served, scenario: str) -> dict[str, Any]:
    """A scenario's result: over HTTP in this process, over gRPC in a child (see the module)."""
    if protocol == "http":
        address = f"127.0.0.1:{served.running.http_port}"
        return shm_scenarios.SCENARIOS[scenario](tritonclient.http, address)
    command = [sys.executable, "-m", "tests.service.shm_scenarios", "grpc",
               f"127.0.0.1:{served.port}", scenario]  # fmt: skip
    result = subprocess.run(
        command, capture_output=True, text=True, cwd=REPO, env=env(), timeout=60
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_every_datatype_through_shared_memory(
    protocol: str, serve: ServeFactory, tmp_path: Path
) -> None:
    served = serve(write_every_datatype_model(tmp_path / "model.onnx"), shared_memory=True)
    result = run(protocol, served, "every_datatype")
    assert all(result["equal"].values()), result["equal"]
    assert result["untouched"] == {"in": True, "out": True}
    for output in result["outputs"]:
        assert "data" not in output and "contents" not in output
        parameters = output["parameters"]
        region = parameters["shared_memory_region"]
        if protocol == "grpc":  # MessageToJson: each a oneof, int64 values as strings
            region = region["string_param"]
        assert region == "out"
        assert [int(d) for d in output["shape"]] == [2, 3]
    regions = {r["name"]: r for r in result["status"]}
    assert set(regions) == {"in", "out"}
    assert regions["in"]["offset"] == shm_scenarios.GUARD
    assert regions["in"]["key"].endswith("_in")
    assert [r["name"] for r in result["after_one"]] == ["out"]
    assert result["after_all"] == []


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_shared_memory_beside_data_in_the_request(
    protocol: str, serve: ServeFactory, tmp_path: Path
) -> None:
    """One input and one output in shared memory, the others in the request and the answer."""
    served = serve(write_masked_model(tmp_path / "model.onnx"), shared_memory=True)
    result = run(protocol, served, "mixed")
    assert result["out"], "the output written to shared memory differs"
    assert result["count"] == result["expected_count"]
    out = result["out_in_answer"]  # its data is in shared memory only
    assert "data" not in out and "contents" not in out
    assert set(out["parameters"]) == {
        "shared_memory_region", "shared_memory_offset", "shared_memory_byte_size"
    }  # fmt: skip
    assert result["untouched"]


# misuse -> (status, what the message says)
MISUSE = {
    "offset past the region": ("INVALID_ARGUMENT", "inputs[0].parameters.shared_memory_offset"),
    "size past the region": (
        "INVALID_ARGUMENT",
        "shared_memory_byte_size: 512 bytes from offset 8",
    ),
    "size not the tensor's": ("INVALID_ARGUMENT", "input 'input' is FP32 of shape [1, 64]: 256"),
    "negative offset": ("INVALID_ARGUMENT", "shared_memory_offset: expected a number of bytes"),
    "negative size": ("INVALID_ARGUMENT", "shared_memory_byte_size: expected a number of bytes"),
    "huge size": ("INVALID_ARGUMENT", "run past the end of region 'in' (512 bytes)"),
    "unknown region": ("NOT_FOUND", "shared_memory_region: no shared memory region 'nope'"),
    "unregistered region": ("NOT_FOUND", "no shared memory region 'gone' is registered"),
    "no such object": ("INVALID_ARGUMENT", "key: cannot open shared memory object"),
    "object too small": ("INVALID_ARGUMENT", "past the end of shared memory object"),
    "range past the object": ("INVALID_ARGUMENT", "offset 9223372036854775808 + byte_size 8"),
    "key no name": ("INVALID_ARGUMENT", "key: '/../etc/passwd' is no shared memory object name"),
    "registered twice": ("INVALID_ARGUMENT", "name: region 'in' is already registered"),
    "output region too small": ("INVALID_ARGUMENT", "80 bytes, more than the 40 given"),
    "outputs overlap": ("INVALID_ARGUMENT", "overlap those of outputs[0].parameters"),
    "negative register offset": ("INVALID_ARGUMENT", "offset: expected an integer >= 0, got -1"),
}


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_every_misuse_is_refused_and_nothing_outside_is_touched(
    protocol: str, serve: ServeFactory, tiny_model_path: Path
) -> None:
    served = serve(tiny_model_path, shared_memory=True)
    result = run(protocol, served, "misuse")
    errors = result["errors"]
    expected = {row: MISUSE[row] for row in errors}
    assert set(expected) >= set(MISUSE) - {"negative register offset"}
    for row, (status, words) in expected.items():
        error = errors[row]
        assert error is not None, f"{row}: no error"
        assert error["status"] == status, f"{row}: {error}"
        assert words in error["message"], f"{row}: {error['message']}"
    assert result["input region unchanged"]
    assert result["untouched"] == {"small": True, "out": True, "tiny": True}
    assert sorted(r["name"] for r in result["status"]) == ["in", "out", "small"]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_off_by_default_says_how_to_turn_it_on(
    protocol: str, serve: ServeFactory, tiny_model_path: Path
) -> None:
    result = run(protocol, serve(tiny_model_path), "off")
    assert "system_shared_memory" not in result["extensions"]
    for operation, error in result["errors"].items():
        assert error["status"] == "UNIMPLEMENTED", operation
        assert "system shared memory is off" in error["message"], operation
        assert "--shared-memory on" in error["message"], operation
    assert result["errors"]["infer"]["message"].startswith(
        "inputs[0].parameters.shared_memory_region:"
    )


def test_server_metadata_lists_the_extension_when_on(
    serve: ServeFactory, tiny_model_path: Path
) -> None:
    served = serve(tiny_model_path, shared_memory=True)
    client = tritonclient.http.InferenceServerClient(f"127.0.0.1:{served.running.http_port}")
    assert "system_shared_memory" in client.get_server_metadata()["extensions"]
    assert client.get_system_shared_memory_status() == []
