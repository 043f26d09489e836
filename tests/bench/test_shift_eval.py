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
    np.testing.assert_array_equal(streams["grey +4"].features, np.minimum(x + 4, MAX_PIXEL))
    moved = streams["translate 1px"].features.reshape(-1, 8, 8)
    assert (moved[:, :, 0] == 0).all() and (moved[:, :, 1:] == x.reshape(-1, 8, 8)[:, :, :-1]).all()
    assert set(streams["classes 0-4"].labels) == {0, 1, 2, 3, 4}
    heavy, light = streams["heavy ink"], streams["light ink"]
    assert heavy.features.sum(axis=1).mean() > light.features.sum(axis=1).mean()
    assert set(heavy.labels) == set(light.labels) == set(range(10))  # same classes, other writers
    order = streams["clean"].requests(150, seed=1)
    assert sorted(order[:60]) == list(range(60))  # shuffled passes over the pool


def _shift_eval(model: Path, *extra: str) -> dict:
    args = [
        "shift-eval", "--model", str(model), "--requests", "300", "--clean-requests", "400",
        "--streams", "clean", "invert", "classes 0-4", "--format", "json",
        "--false-alarm-replay", "20000", *extra,
    ]  # fmt: skip
    result = subprocess.run(
        foldserve_command(*args), capture_output=True, text=True, cwd=REPO, env=env(), timeout=600
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_shift_eval_prints_the_table_for_a_trained_model(trained_mlp_dir: Path, tmp_path: Path):
    plot = tmp_path / "scores.png"
    output = _shift_eval(trained_mlp_dir / "model.onnx", "--plot", str(plot))
    rows = {row["name"]: row for row in output["streams"]}
    assert list(rows) == ["clean", "invert", "classes 0-4"]
    clean, invert, prior = rows["clean"], rows["invert"], rows["classes 0-4"]
    assert clean["alarm_at"] == 0 and clean["peak_ratio"] < 1 and clean["accuracy"] > 0.9
    assert clean["examples"] == 400 and clean["worker_examples"] == [400]
    assert 1 <= invert["alarm_at"] <= 10 and invert["accuracy"] < 0.5
    assert 0 < prior["alarm_at"] <= 300 and prior["workers"] == 1
    replays = output["false_alarms"]
    assert [r["stated_arl"] for r in replays] == [1e6, 1e3, 1e4, 1e5]
    assert replays[0]["examples"] == 20000 and replays[0]["alarms"] == 0
    assert plot.stat().st_size > 1000


def test_with_two_workers_the_monitor_needs_as_many_requests(trained_mlp_dir: Path):
    """The workers share one monitor: an alarm needs the requests one worker needs, though
    each worker answered only part of them."""
    model = trained_mlp_dir / "model.onnx"
    one = {r["name"]: r for r in _shift_eval(model, "--false-alarm-replay", "0")["streams"]}
    two = _shift_eval(model, "--workers", "2", "--false-alarm-replay", "0")["streams"]
    for row in two:
        assert row["workers"] == 2 and row["examples"] == row["requests"]
        assert sum(row["worker_examples"]) == row["requests"]
        if row["alarm_at"]:
            assert row["alarm_at"] <= 1.2 * one[row["name"]]["alarm_at"] + 1
        else:
            assert one[row["name"]]["alarm_at"] == 0


def test_adapt_eval_scores_the_serving_and_the_adapted_model(trained_mlp_dir):
    model = str(trained_mlp_dir / "model.onnx")
    command = [*foldserve_command(), "shift-eval", "--adapt", "--model", model]
    command += ["--streams", "grey +4", "invert", "--format", "json"]
    done = subprocess.run(command, cwd=REPO, env=env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    (rows,) = json.loads(done.stdout).values()
    by_name = {r["stream"]: r for r in rows}
    assert list(by_name) == ["clean", "grey +4", "invert"]
    grey = by_name["grey +4"]
    assert grey["adapted"] > by_name["clean"]["adapted"] - 0.05 and grey["serving"] < 0.5
    # Inversion is not undone: the adapted model is unsure of it (the label-free signal).
    assert by_name["invert"]["entropy_adapted"] > 5 * by_name["clean"]["entropy_adapted"]


def test_the_worst_of_several_models_takes_each_measure_on_its_own():
    from foldserve.bench.shift_eval.adapt import AdaptRow, worst

    def rows(model, clean, grey, seconds):
        return [
            AdaptRow(model, "clean", clean, clean, 0.1, 1.0, 0.02, 0.02),
            AdaptRow(model, "grey +4", 0.1, grey, seconds, 0.1, 0.0, 0.03),
        ]

    table = worst([rows("a", 0.99, 0.98, 0.5), rows("b", 0.95, 0.96, 0.2)])
    grey = table[1]
    assert grey.model == "a" and grey.below_clean == pytest.approx(-0.01)
    assert grey.below_serving == pytest.approx(0.86) and grey.seconds == 0.5
