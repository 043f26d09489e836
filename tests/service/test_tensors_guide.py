"""The examples of docs/guides/tensors.md (its `<!-- run -->` blocks, tests/runnable_docs.py),
run as they are written: its script builds the string model, a repository serves it beside a
classifier, and each curl example prints what the guide shows (up to the values a different
model gives) and each Python example runs."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from foldserve.server.app import start_server
from foldserve.server.config import ServeConfig
from tests.integration.deploy_tools import skip_or_fail
from tests.runnable_docs import Block, blocks, run
from tests.service.rest_server import RestServer
from tests.service.subprocess_server import REPO, env

pytestmark = pytest.mark.integration

GUIDE = REPO / "docs" / "guides" / "tensors.md"


def curl_examples() -> list[Block]:
    return [block for block in blocks(GUIDE) if block.shown is not None]


def python_examples() -> list[str]:
    return [block.code for block in blocks(GUIDE) if block.language == "python"]


def build_script() -> str:
    (script,) = [code for code in python_examples() if "onnx.save" in code]
    return script


@pytest.fixture(scope="module")
def guide_server(
    tmp_path_factory: pytest.TempPathFactory, tiny_model_path: Path
) -> Iterator[RestServer]:
    if shutil.which("curl") is None:
        skip_or_fail("curl is not installed (apt-get install curl; .ci/run does)")
    root = tmp_path_factory.mktemp("guide")
    subprocess.run(
        [sys.executable, "-c", build_script()], cwd=root, env=env(), check=True, timeout=60
    )
    (root / "models" / "foldserve" / "1").mkdir(parents=True)
    shutil.copy(tiny_model_path, root / "models" / "foldserve" / "1" / "model.onnx")
    config = ServeConfig(
        model_repository=str(root / "models"), host="127.0.0.1", port=0, http_port=0,
        metrics_port=0,
    )  # fmt: skip
    registry = CollectorRegistry()
    server = RestServer(start_server(config, registry, serve_metrics_http=False), registry)
    yield server
    server.stop()


def ported(text: str, server: RestServer) -> str:
    text = text.replace("localhost:8000", f"127.0.0.1:{server.port}")
    return text.replace("localhost:50051", f"127.0.0.1:{server.running.port}")


def test_the_guide_has_its_examples() -> None:
    assert len(curl_examples()) + len(python_examples()) == len(blocks(GUIDE))
    commands = "\n".join(block.code for block in curl_examples())
    for needed in ("/models/words/infer", "binary_data_size", '"classification": 3'):
        assert needed in commands, needed
    assert len(python_examples()) == 4


@pytest.mark.parametrize("block", curl_examples(), ids=lambda block: block.name)
def test_a_curl_example_runs_as_written(guide_server, tmp_path: Path, block: Block) -> None:
    ports = {"http": guide_server.port, "grpc": guide_server.running.port}
    run(block, tmp_path, ports, timeout=30)


@pytest.mark.parametrize(
    "code",
    [c for c in python_examples() if "onnx.save" not in c],
    ids=lambda c: c.splitlines()[2][:40],
)
def test_a_python_example_runs_as_written(guide_server, code: str) -> None:
    """In a child process each: tritonclient.grpc cannot share one with our protobuf names."""
    done = subprocess.run(
        [sys.executable, "-c", ported(code, guide_server)],
        capture_output=True, text=True, cwd=REPO, env=env(), timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip()
