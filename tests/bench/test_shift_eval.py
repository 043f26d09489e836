"""`foldserve shift-eval`, short: one trained digits MLP, a few streams through real servers."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from foldserve.bench.shift_eval.streams import MAX_PIXEL, digits_streams
from tests.service.subprocess_server import REPO, env, foldserve_command

pytestmark = pytest.mark.slow


def test_streams_are_the_documented_shifts_of_the_test_split():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 17, (60, 64)).astype(np.float32)
    y = np.arange(60) % 10
    streams = {s.name: s for s in digits_streams(x, y)}
    assert next(iter(streams)) == "clean" and streams["clean"].clean
    np.testing.assert_array_equal(streams["invert"].features, MAX_PIXEL - x)
    np.testing.assert_array_equal(streams["intensity x0.5"].features, x * 0.5)
    assert streams["intensity x1.5"].features.max() <= MAX_PIXEL
    moved = streams["translate 1px"].features.reshape(-1, 8, 8)
    assert (moved[:, :, 0] == 0).all() and (moved[:, :, 1:] == x.reshape(-1, 8, 8)[:, :, :-1]).all()
    assert set(streams["classes 0-4"].labels) == {0, 1, 2, 3, 4}
    heavy, light = streams["heavy ink"], streams["light ink"]
    assert heavy.features.sum(axis=1).mean() > light.features.sum(axis=1).mean()
    assert set(heavy.labels) == set(light.labels) == set(range(10))  # same classes, other writers
    order = streams["clean"].requests(150, seed=1)
    assert sorted(order[:60]) == list(range(60))  # shuffled passes over the pool


def test_shift_eval_prints_the_table_for_a_trained_model(trained_mlp_dir: Path, tmp_path: Path):
    plot = tmp_path / "scores.png"
    args = [
        "shift-eval", "--model", str(trained_mlp_dir / "model.onnx"), "--requests", "150",
        "--clean-requests", "400", "--streams", "clean", "invert", "classes 0-4",
        "--format", "json", "--plot", str(plot),
    ]  # fmt: skip
    result = subprocess.run(
        foldserve_command(*args), capture_output=True, text=True, cwd=REPO, env=env(), timeout=600
    )
    assert result.returncode == 0, result.stderr
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert list(rows) == ["clean", "invert", "classes 0-4"]
    clean, invert, prior = rows["clean"], rows["invert"], rows["classes 0-4"]
    assert clean["alarm_at"] == 0 and clean["peak_ratio"] < 1 and clean["accuracy"] > 0.9
    assert 1 <= invert["alarm_at"] <= 10 and invert["accuracy"] < 0.5
    assert 0 < prior["alarm_at"] <= 150 and "prior" in prior["fired"]
    assert plot.stat().st_size > 1000 or "matplotlib is not installed" in result.stderr
