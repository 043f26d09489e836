"""The curl examples of docs/guides/rest.md (its `<!-- run -->` blocks, tests/runnable_docs.py),
run as they are written (JSON and binary bodies) against a REST server of a model shaped like the
default one: each exits 0 and prints what the guide shows, up to the values a different model
gives."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.deploy_tools import skip_or_fail
from tests.runnable_docs import Block, blocks, run
from tests.service.rest_server import RestServer, start_rest
from tests.service.subprocess_server import REPO

pytestmark = pytest.mark.integration

GUIDE = REPO / "docs" / "guides" / "rest.md"


def examples() -> list[Block]:
    return [block for block in blocks(GUIDE) if block.shown is not None]


@pytest.fixture(scope="module")
def rest(tiny_model_path: Path) -> Iterator[RestServer]:
    if shutil.which("curl") is None:
        skip_or_fail("curl is not installed (apt-get install curl; .ci/run does)")
    server = start_rest(tiny_model_path)
    yield server
    server.stop()


def test_the_guide_has_its_examples() -> None:
    assert len(examples()) == len(blocks(GUIDE)), "every runnable block shows its JSON"
    commands = "\n".join(block.code for block in examples())
    for path in ("/v2\n", "/health/live", "/health/ready", "/models/foldserve\n", "/ready",
                 "/infer", "Inference-Header-Content-Length", "/repository/index"):  # fmt: skip
        assert path in commands, path


@pytest.mark.parametrize("block", examples(), ids=lambda block: block.name)
def test_a_guide_example_runs_as_written(rest, tmp_path: Path, block: Block) -> None:
    run(block, tmp_path, {"http": rest.port}, timeout=30)
