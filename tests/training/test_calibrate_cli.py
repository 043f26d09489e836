"""`foldserve calibrate`: a shift monitor for a model foldserve did not train, from a sample of its
inputs. The model here is a softmax regression fitted in numpy and written without foldserve
metadata; its monitor must alarm on inverted digits and stay quiet on clean ones."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from argparse import Namespace
from pathlib import Path

import numpy as np
import onnx
import pytest

from foldserve.contract import SHIFT_REFERENCE_FILE
from foldserve.core.loading import load_model
from foldserve.core.runner import monitor_for
from foldserve.core.shift.settings import ShiftSettings
from foldserve.datasets import load_dataset, split_dataset
from foldserve.samples import read_sample
from foldserve.training.calibrate_cli import calibrate_model, stratified_split
from tests.service.conftest import _softmax_regression
from tests.service.model_files import DEFAULT_SPLIT, linear_model
from tests.service.subprocess_server import REPO, env

CLEAN_REQUESTS = 3000


@pytest.fixture(scope="module")
def digits():
    return split_dataset(load_dataset("digits"), **DEFAULT_SPLIT)


@pytest.fixture(scope="module")
def foreign(tmp_path_factory, digits) -> Path:
    """A digits classifier without any foldserve metadata, and a CSV of its training inputs."""
    folder = tmp_path_factory.mktemp("foreign")
    weights, bias = _softmax_regression(digits.train.features, digits.train.labels, 10)
    onnx.save(linear_model(weights, bias, None), folder / "model.onnx")
    with (folder / "sample.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([*(f"p{i}" for i in range(64)), "label"])
        for row, label in zip(digits.train.features, digits.train.labels, strict=True):
            writer.writerow([*row.tolist(), str(label)])
    return folder


def _requests(x: np.ndarray, count: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    order = np.concatenate([rng.permutation(len(x)) for _ in range(-(-count // len(x)))])
    return x[order[:count]]


def _alarm_at(model_path: Path, x: np.ndarray) -> int:
    """Stream `x` one example per call through a fresh monitor; its first alarm (0: none)."""
    model = load_model(model_path)
    monitor = monitor_for(model, ShiftSettings())
    for row in x.astype(np.float32):
        outputs = model.run_classifier(row[None, :])
        monitor.observe(model.shift.rows(row[None, :], outputs), outputs["logits"].argmax(1))
    return monitor.snapshot().first_alarm_example


def test_calibrate_writes_a_reference_beside_the_model_and_runs_without_torch(foreign):
    code = (
        "import sys; from foldserve.cli import main; code = main(); "
        "print('torch imported' if 'torch' in sys.modules else 'no torch'); sys.exit(code)"
    )
    command = [
        sys.executable, "-c", code, "calibrate", "--model", str(foreign / "model.onnx"),
        "--data", str(foreign / "sample.csv"), "--shift-replay", "20000",
    ]  # fmt: skip
    result = subprocess.run(
        command, capture_output=True, text=True, cwd=REPO, env=env(), timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert "no torch" in result.stdout and "written to" in result.stdout
    reference = json.loads((foreign / SHIFT_REFERENCE_FILE).read_text())
    assert [g["name"] for g in reference["groups"]] == ["input", "probabilities"]
    assert reference["replay"] == 20000 and reference["replay_alarms"] == 0
    assert load_model(foreign / "model.onnx").shift.origin.startswith("reference file")


def test_the_calibrated_monitor_alarms_on_inverted_digits_and_not_on_clean_ones(foreign, digits):
    if not (foreign / SHIFT_REFERENCE_FILE).is_file():
        calibrate_model(_args(foreign / "model.onnx", str(foreign / "sample.csv")))
    test = digits.test.features
    assert _alarm_at(foreign / "model.onnx", _requests(test, CLEAN_REQUESTS, 1)) == 0
    assert 0 < _alarm_at(foreign / "model.onnx", _requests(16.0 - test, 200, 2)) <= 10


def _args(model: Path, data: str, out: Path | None = None) -> Namespace:
    return Namespace(
        model=model, data=data, out=out, label_column="label", held_out=0.2,
        shift_arl=1e6, shift_components=4, shift_replay=5000,
    )  # fmt: skip


def test_a_copy_of_the_model_can_carry_the_reference_and_a_repository_finds_its_own(
    tmp_path, foreign, digits
):
    repository = tmp_path / "repo" / "7"
    repository.mkdir(parents=True)
    (repository / "model.onnx").write_bytes((foreign / "model.onnx").read_bytes())
    np.savez(tmp_path / "sample.npz", X=digits.train.features)  # no labels: predictions
    calibrate_model(_args(repository / "model.onnx", str(tmp_path / "sample.npz")))
    assert (repository / SHIFT_REFERENCE_FILE).is_file()
    assert load_model(repository / "model.onnx", "m", "7").shift is not None
    copy = tmp_path / "monitored.onnx"
    calibrate_model(_args(foreign / "model.onnx", str(tmp_path / "sample.npz"), copy))
    model = load_model(copy)
    assert model.shift.origin == "model file metadata"
    inverted = _requests(16.0 - digits.test.features, 100, 3)
    assert 0 < _alarm_at(copy, inverted) <= 10


def test_samples_come_as_csv_npz_or_a_directory_of_tensors(tmp_path):
    x = np.arange(24, dtype=np.float32).reshape(6, 4)
    (tmp_path / "t").mkdir()
    np.save(tmp_path / "t" / "a.npy", x[:2])  # a batch
    for i in range(2, 6):
        np.save(tmp_path / "t" / f"b{i}.npy", x[i])  # one example each
    values, labels = read_sample(str(tmp_path / "t"), (2, 2))
    assert values.shape == (6, 2, 2) and labels is None
    np.testing.assert_array_equal(values.reshape(6, 4), x)
    (tmp_path / "s.csv").write_text("a,b,label,c,d\n1,2,x,3,4\n5,6,y,7,8\n")
    values, labels = read_sample(str(tmp_path / "s.csv"), (4,))
    assert values.tolist() == [[1, 2, 3, 4], [5, 6, 7, 8]] and labels.tolist() == ["x", "y"]
    from foldserve.datasets import DataError

    with pytest.raises(DataError, match="do not make examples of shape"):
        read_sample(str(tmp_path / "s.csv"), (3,))


def test_the_held_out_part_keeps_the_class_mix():
    classes = np.repeat(np.arange(3), [50, 30, 20])
    fit, held = stratified_split(classes, 0.2, seed=0)
    assert np.bincount(classes[held]).tolist() == [10, 6, 4]
    assert sorted(np.concatenate([fit, held]).tolist()) == list(range(100))
