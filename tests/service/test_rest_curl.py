"""The curl examples of docs/guides/rest.md, run as they are written (JSON and binary bodies)
against a REST server of a model shaped like the default one: each exits 0 and prints what the
guide shows, up to the values a different model gives."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.deploy_tools import skip_or_fail
from tests.service.rest_server import RestServer, start_rest
from tests.service.subprocess_server import REPO

pytestmark = pytest.mark.integration

GUIDE = REPO / "docs" / "guides" / "rest.md"
# A shell block, then (after blank lines) the JSON block that shows what it prints.
EXAMPLE = re.compile(r"```sh\n((?:(?!```).)*)```\s*```json\n(.*?)```", re.S)


def examples() -> list[tuple[str, str]]:
    return [(m.group(1), m.group(2)) for m in EXAMPLE.finditer(GUIDE.read_text())]


@pytest.fixture(scope="module")
def rest(tiny_model_path: Path) -> Iterator[RestServer]:
    if shutil.which("curl") is None:
        skip_or_fail("curl is not installed (apt-get install curl; .ci/run does)")
    server = start_rest(tiny_model_path)
    yield server
    server.stop()


def alike(shown: object, got: object, where: str = "") -> None:
    """`got` has the guide's structure: the same keys, the same lengths of arrays of objects,
    the same JSON types, and the same error message."""
    if isinstance(shown, dict):
        assert isinstance(got, dict) and set(got) == set(shown), (where, got)
        for key in shown:
            if key == "error":
                assert got[key] == shown[key]
            alike(shown[key], got[key], f"{where}.{key}")
    elif isinstance(shown, list) and shown and isinstance(shown[0], dict | list):
        assert isinstance(got, list) and len(got) == len(shown), (where, got)
        for index, (a, b) in enumerate(zip(shown, got, strict=True)):
            alike(a, b, f"{where}[{index}]")
    elif isinstance(shown, bool | str | list):
        assert type(got) is type(shown), (where, got)
    else:
        assert isinstance(got, int | float) and not isinstance(got, bool), (where, got)


def test_the_guide_has_its_examples() -> None:
    commands = "\n".join(command for command, _ in examples())
    for path in ("/v2\n", "/health/live", "/health/ready", "/models/foldserve\n", "/ready",
                 "/infer", "Inference-Header-Content-Length", "/repository/index"):  # fmt: skip
        assert path in commands, path


@pytest.mark.parametrize(("command", "shown"), examples(), ids=lambda v: v.split("\n")[0][:40])
def test_a_guide_example_runs_as_written(rest, tmp_path: Path, command, shown) -> None:
    script = command.replace("localhost:8000", f"127.0.0.1:{rest.port}")
    script = script.replace("curl -s ", "curl -s --max-time 10 ")
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        capture_output=True, text=True, cwd=tmp_path, timeout=30,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    alike(json.loads(shown), json.loads(done.stdout))
