"""`foldserve predict`'s checks before it sends anything: labels, feature count, reachability."""

from __future__ import annotations

import io
import json
import socket
from pathlib import Path

import numpy as np
import pytest

from foldserve.client.client import run_predict
from foldserve.client.health_probe import check
from foldserve.core.loading import load_model
from tests.service.conftest import Served
from tests.service.model_files import metadata, write_tiny_model
from tests.service.test_client import args, predict

CLASSES = [f"class_{i}" for i in range(10)]  # the tiny model's class labels


def _strict_json(text: str) -> dict:
    """Parse JSON that must not contain NaN or Infinity (which json.dumps writes by default)."""

    def refuse(constant: str) -> None:
        raise AssertionError(f"{constant} in JSON output: {text}")

    return json.loads(text, parse_constant=refuse)


def _predict_calls(served: Served) -> float:
    codes = ("OK", "INVALID_ARGUMENT")
    return sum(
        served.sample("foldserve_requests_total", method="Predict", code=c) or 0 for c in codes
    )


@pytest.fixture(scope="module")
def numbered_model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny model whose class labels are numbers that are not their indices: '1' .. '10'."""
    path = tmp_path_factory.mktemp("numbered") / "model.onnx"
    return write_tiny_model(path, meta=metadata((64,), [str(i + 1) for i in range(10)]))


def test_number_and_text_labels_mean_the_same_class(serve, numbered_model_path: Path) -> None:
    """`"label": 2` and `"label": "2"` both name the class labelled "2" (not index 2)."""
    served = serve(load_model(numbered_model_path))
    row = np.random.default_rng(2).normal(size=64).astype(np.float32)
    predicted = served.model.class_labels[
        int(served.model.run_classifier(row[None])["logits"].argmax())
    ]
    stdin = "\n".join(
        json.dumps({"features": row.tolist(), "label": label})
        for label in (int(predicted), predicted)
    )
    code, out = predict(served, stdin, data="-", summary=True, format="json")
    assert code == 0
    summary = _strict_json(out)
    assert (summary["correct"], summary["labelled"]) == (2, 2)


def test_a_json_label_matching_no_class_is_an_error(
    shared_server: Served, capsys: pytest.CaptureFixture
) -> None:
    stdin = "\n".join(
        json.dumps({"features": [0.0] * 64, "label": label}) for label in ("class_3", "cat")
    )
    code, out = predict(shared_server, stdin, data="-", summary=True)
    assert (code, out) == (1, "")
    err = capsys.readouterr().err
    assert "stdin: example index 1: label 'cat' matches none of the model's 10 classes" in err
    assert str(CLASSES) in err
    assert len(err.splitlines()) == 1


def test_npz_integer_labels_against_text_classes_are_an_error(
    served: Served, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """Integer `y` is not a class index: against classes 'class_0'.. it matches nothing."""
    npz = tmp_path / "ints.npz"
    np.savez(npz, X=np.zeros((6, 64)), y=np.array([0, 1, 0, 1, 0, 1]))
    code, out = predict(served, data=str(npz), summary=True)
    assert (code, out) == (1, "")
    err = capsys.readouterr().err
    assert "ints.npz: label '0' (first at example 1, counting from 1) matches none" in err
    assert str(CLASSES) in err
    assert _predict_calls(served) == 0


def test_wrong_feature_count_is_one_error_before_sending(
    served: Served, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    npz = tmp_path / "four.npz"
    np.savez(npz, X=np.zeros((359, 4)), y=np.array(["class_0", "class_1"] * 179 + ["class_0"]))
    code, out = predict(served, data=str(npz), summary=True)
    assert (code, out) == (1, "")
    err = capsys.readouterr().err
    assert err == (
        f"foldserve predict: {npz} (all: 359 examples): each example has 4 features, but the "
        "model expects 64 (input shape [64]); nothing was sent\n"
    )
    assert _predict_calls(served) == 0


def test_data_for_another_model_is_told_by_its_feature_count(
    serve, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """Digits against a 4-feature model: the count is the error, not the first unknown label."""
    served = serve(load_model(write_tiny_model(tmp_path / "four.onnx", features=4, classes=3)))
    code, out = predict(served, data="digits", summary=True)
    assert (code, out) == (1, "")
    err = capsys.readouterr().err
    assert (
        "digits (test: 359 examples): each example has 64 features, but the model expects 4" in err
    )
    assert _predict_calls(served) == 0


def test_one_short_example_on_stdin_stops_the_run_before_sending(
    served: Served, capsys: pytest.CaptureFixture
) -> None:
    code, out = predict(served, json.dumps([[0.0] * 64, [1.0] * 5]), data="-")
    assert (code, out) == (1, "")
    err = capsys.readouterr().err
    assert "stdin: example index 1 has 5 features, but the model expects 64" in err
    assert _predict_calls(served) == 0


def test_summary_says_n_a_when_no_call_succeeded(
    shared_server: Served, capsys: pytest.CaptureFixture
) -> None:
    stdin = json.dumps([[float("nan")] * 64] * 2)  # Python's json reads NaN; the server refuses
    code, out = predict(shared_server, stdin, data="-", summary=True)
    assert code == 1
    assert "nan" not in out
    assert "latency_ms: n/a (no call succeeded)" in out
    code, out = predict(shared_server, stdin, data="-", summary=True, format="json")
    assert _strict_json(out)["latency_ms"] == {"p50": None, "p90": None, "p99": None}
    assert "INVALID_ARGUMENT: features[0]: nan is not finite" in capsys.readouterr().err


def test_a_closed_port_fails_at_once_in_the_words_health_uses(
    capsys: pytest.CaptureFixture,
) -> None:
    """UNAVAILABLE at the first call, not DEADLINE_EXCEEDED after waiting out --timeout."""
    with socket.socket() as unused:  # bound, never listening: connecting is refused
        unused.bind(("127.0.0.1", 0))
        target = f"127.0.0.1:{unused.getsockname()[1]}"
        code = run_predict(args(target, timeout=30.0), io.StringIO(), io.StringIO())
        assert check(target, "", timeout=30.0) == 1
    assert code == 1
    predict_err, health_err = capsys.readouterr().err.splitlines()
    words = "UNAVAILABLE: failed to connect (connection refused)"
    assert predict_err == f"foldserve predict: {target}: {words}"
    assert health_err == f"foldserve health: {target} service '': {words}"
