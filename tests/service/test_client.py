"""`foldserve predict`: its inputs (digits, CSV, NPZ, JSON on stdin) and its output."""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path

import numpy as np
import pytest

from foldserve.client.client import run_predict
from foldserve.core.loading import load_model
from tests.service.conftest import Served


def args(target: str, **overrides: object) -> argparse.Namespace:
    values = {
        "target": target, "data": "digits", "label_column": "label", "split": None,
        "summary": False, "format": "text", "limit": None, "timeout": 10.0, "model_name": "",
    }  # fmt: skip
    values.update(overrides)
    return argparse.Namespace(**values)


def predict(served: Served, stdin: str = "", **overrides: object) -> tuple[int, str]:
    out = io.StringIO()
    code = run_predict(args(f"127.0.0.1:{served.port}", **overrides), io.StringIO(stdin), out)
    return code, out.getvalue()


@pytest.fixture
def digits_served(serve, digits_model_dir: Path) -> Served:
    return serve(load_model(digits_model_dir / "model.onnx"))


def test_json_list_on_stdin(shared_server: Served) -> None:
    rng = np.random.default_rng(0)
    rows = rng.normal(size=(3, 64)).astype(np.float32)
    code, out = predict(shared_server, json.dumps(rows.tolist()), data="-")
    assert code == 0
    lines = [json.loads(line) for line in out.splitlines()]
    logits = shared_server.model.run_classifier(rows)["logits"]
    assert [line["label"] for line in lines] == logits.argmax(axis=1).tolist()
    assert [line["index"] for line in lines] == [0, 1, 2]
    assert all(line["class"] == f"class_{line['label']}" for line in lines)


def test_json_lines_with_labels_and_summary(shared_server: Served) -> None:
    rows = np.random.default_rng(1).normal(size=(4, 64)).astype(np.float32)
    logits = shared_server.model.run_classifier(rows)["logits"]
    truth = logits.argmax(axis=1).tolist()
    truth[0] = (truth[0] + 1) % 10  # one wrong
    stdin = "\n".join(
        json.dumps({"features": row.tolist(), "label": f"class_{t}"})
        for row, t in zip(rows, truth, strict=True)
    )
    code, out = predict(shared_server, stdin, data="-", summary=True, format="json")
    assert code == 0
    summary = json.loads(out)
    assert (summary["count"], summary["correct"], summary["labelled"]) == (4, 3, 4)
    assert summary["accuracy"] == 0.75
    assert set(summary["latency_ms"]) == {"p50", "p90", "p99"}


def test_text_summary_without_labels(shared_server: Served) -> None:
    code, out = predict(shared_server, json.dumps([[0.0] * 64] * 2), data="-", summary=True)
    assert code == 0
    assert "examples: 2 (errors: 0)" in out
    assert "accuracy: n/a (no labels)" in out
    assert "latency_ms: p50=" in out


def test_bad_examples_are_reported_and_fail_the_run(
    shared_server: Served, capsys: pytest.CaptureFixture
) -> None:
    stdin = json.dumps([[0.0] * 64, [0.0] * 63 + [float("nan")]])  # Python's json reads NaN
    code, out = predict(shared_server, stdin, data="-")
    assert code == 1
    assert len(out.splitlines()) == 1
    err = capsys.readouterr().err
    assert "example index 1: INVALID_ARGUMENT: features[63]: nan is not finite" in err


def test_unreadable_stdin(shared_server: Served, capsys: pytest.CaptureFixture) -> None:
    assert predict(shared_server, "{not json", data="-")[0] == 1
    assert "stdin: not JSON" in capsys.readouterr().err


def test_csv_and_npz_files(digits_served: Served, tmp_path: Path) -> None:
    from foldserve.datasets import load_dataset

    digits = load_dataset("digits")
    rows, labels = digits.features[:30], digits.labels[:30]
    csv = tmp_path / "d.csv"
    header = ",".join([*(f"p{i}" for i in range(64)), "digit"])
    lines = [
        ",".join([*map(str, row.tolist()), str(label)])
        for row, label in zip(rows, labels, strict=True)
    ]
    csv.write_text("\n".join([header, *lines]) + "\n")
    logits = digits_served.model.run_classifier(rows)["logits"]
    expected = int(np.sum(logits.argmax(axis=1) == labels))
    code, out = predict(digits_served, data=str(csv), label_column="digit", summary=True,
                        format="json")  # fmt: skip
    assert code == 0
    assert (json.loads(out)["count"], json.loads(out)["correct"]) == (30, expected)
    npz = tmp_path / "d.npz"
    np.savez(npz, X=rows.reshape(30, 8, 8), y=labels)
    code, out = predict(digits_served, data=str(npz), summary=True, format="json")
    assert code == 0
    assert json.loads(out)["correct"] == expected


def test_limit_sends_and_checks_only_the_first_examples(shared_server: Served) -> None:
    stdin = json.dumps([[0.0] * 64, [0.5] * 64, [1.0] * 5])  # the third is never sent
    code, out = predict(shared_server, stdin, data="-", limit=2, summary=True, format="json")
    assert code == 0
    assert json.loads(out)["count"] == 2
