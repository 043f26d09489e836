"""`foldserve repository-scale` in a tiny mode: 3 small models and the smallest model-zoo graph,
one short round, every server on 127.0.0.1. Checks that every figure is there and sane, not
how fast anything is (speed is the benchmark's to print)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

MODELS = 3
TINY = (
    "--models", str(MODELS), "--large", "squeezenet", "--rounds", "1", "--seconds", "0.2",
    "--in-flight", "1,4", "--large-seconds", "0.2",
)  # fmt: skip


def _run(tmp_path: Path) -> tuple[subprocess.CompletedProcess, dict[tuple, list[float]]]:
    figures = tmp_path / "figures.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("FOLDSERVE_")}
    done = subprocess.run(
        [sys.executable, "-m", "foldserve.cli", "repository-scale", *TINY, "--json", str(figures)],
        capture_output=True, text=True, timeout=120, env={**env, "ORT_DISABLE_TELEMETRY": "1"},
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    saved = json.loads(figures.read_text())
    assert saved["problems"] == []
    return done, {tuple(entry["key"]): entry["rounds"] for entry in saved["figures"]}


def test_every_model_answers_and_every_figure_is_there(tmp_path: Path) -> None:
    done, figures = _run(tmp_path)
    for protocol in ("grpc", "rest"):
        for in_flight in (1, 4):
            one, spread = (1, protocol, in_flight, "one"), (1, protocol, in_flight, "spread")
            assert figures[(*one, "models_answered")] == [1]
            assert figures[(*spread, "models_answered")] == [MODELS]
            for key in (one, spread):
                assert figures[(*key, "calls_per_s")][0] > 0
                assert 0 < figures[(*key, "p50_ms")][0] <= figures[(*key, "p99_ms")][0]
                assert figures[(*key, "server_cpu_us_per_call")][0] > 0
    assert figures[("first small", "load_ms")][0] > 0
    assert figures[("other small", "rss_mb")][0] > 0
    assert figures[("large", "squeezenet", "rss_mb")][0] > 0
    assert figures[("large", "squeezenet", "p50_ms")][0] > 0
    assert figures[(1, "small", "rss_mb")][0] > figures[(1, "empty", "rss_mb")][0]
    for title in ("Models loaded one at a time", "Start and memory", "spread over 3"):
        assert title in done.stdout
    assert "FAILED" not in done.stdout
