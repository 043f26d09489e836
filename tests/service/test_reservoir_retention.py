"""With `--adapt-reservoir 0` (the default) a served input does not outlive its call; with a
reservoir, the server keeps it. Checked in the server process's own memory: distinctive
examples are sent, then the process's writable memory is searched for their bytes.

Freed memory is not cleared, so the server runs with glibc's `MALLOC_PERTURB_` (and Python's
allocator on malloc), which overwrites what is freed, and takes filler calls after the marked
ones (the shift monitor keeps up to 64 examples' rows before folding them in): what is found
after that is held, not a leftover."""

from __future__ import annotations

import json
import sys
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from tests.service.process_memory import counts
from tests.service.subprocess_server import ServerProcess, server_process

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")

FREED_MEMORY_OVERWRITTEN = {"MALLOC_PERTURB_": "165", "PYTHONMALLOC": "malloc"}
MARKS = 10
FILLER = 200  # 50 cleared every leftover in trials; the monitor keeps up to 64 examples


def infer(server: ServerProcess, example: np.ndarray) -> None:
    tensor = {"name": "input", "shape": [1, 64], "datatype": "FP32", "data": example.tolist()}
    body = json.dumps({"inputs": [tensor]}).encode()
    url = f"http://127.0.0.1:{server.http_port}/v2/models/foldserve/infer"
    urllib.request.urlopen(urllib.request.Request(url, body), timeout=30).read()


def marked(seed: int) -> np.ndarray:
    """Examples no other data in the process holds: 1234.5 + i/16 + 100 k (+ a seed)."""
    values = 1234.5 + 0.0625 * np.arange(64) + 100.0 * np.arange(MARKS)[:, None]
    return (values + 10_000.0 * seed).astype(np.float32)


@pytest.mark.parametrize("reservoir", [0, 500], ids=["off", "on"])
def test_inputs_outlive_their_call_only_in_the_reservoir(
    tmp_path: Path, trained_mlp_dir: Path, reservoir: int
) -> None:
    args = ["--adapt-reservoir", str(reservoir), "--adapt-on-alarm", "off"]
    model = trained_mlp_dir / "model.onnx"
    filler = np.random.default_rng(0).uniform(0, 16, (FILLER + 1, 64)).astype(np.float32)
    with server_process(model, tmp_path, args, extra_env=FREED_MEMORY_OVERWRITTEN) as server:
        infer(server, filler[-1])  # a fresh server's first call sets up what later calls reuse
        examples = marked(reservoir)
        for example in examples:
            infer(server, example)
        patterns = [example.tobytes() for example in examples]
        seen = counts(server.process.pid, patterns)
        assert any(seen.values()), "the scan does not see the server's data"
        for example in filler[:-1]:
            infer(server, example)
        kept = counts(server.process.pid, patterns)
        assert server.terminate() == 0, server.stderr()
    if reservoir:
        assert all(kept.values()), f"the reservoir lost examples: {list(kept.values())}"
    else:
        assert not any(kept.values()), f"inputs kept with the reservoir off: {list(kept.values())}"
