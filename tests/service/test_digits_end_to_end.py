"""The whole digits test split over gRPC: same answers as offline onnxruntime, same accuracy.

Runs against two models: a torch-free numpy-trained one (fast) and the training half's
`trained_mlp_dir` (a real folded BN network; trains once per session).
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest

from foldserve._proto.foldserve.v1 import predictor_pb2 as pb
from foldserve._proto.foldserve.v1 import predictor_pb2_grpc as pb_grpc
from foldserve.core.loading import load_model
from foldserve.datasets import load_dataset, split_dataset
from foldserve.runtime import ort
from tests.service.subprocess_server import REPO, env, foldserve_command

MODEL_DIRS = [
    "digits_model_dir",
    pytest.param("trained_mlp_dir", marks=pytest.mark.slow),
]


@pytest.fixture(params=MODEL_DIRS)
def model_dir(request: pytest.FixtureRequest) -> Path:
    return request.getfixturevalue(request.param)


def test_grpc_equals_offline_and_accuracy_matches_the_card(serve, model_dir: Path) -> None:
    model = load_model(model_dir / "model.onnx")
    served = serve(model)
    split = model.training.training_metrics["split"]
    test = split_dataset(
        load_dataset("digits"),
        seed=int(split["seed"]),
        val_fraction=float(split["val_fraction"]),
        test_fraction=float(split["test_fraction"]),
    ).test
    offline = ort.InferenceSession(
        str(model_dir / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    stub = pb_grpc.PredictorStub(served.channel)
    shape = (1, *model.classifier.example_shape)
    for i, row in enumerate(test.features):
        logits, probabilities = offline.run(
            ["logits", "probabilities"], {model.classifier.input.name: row.reshape(shape)}
        )
        reply = stub.Predict(pb.PredictRequest(features=row.tolist()), timeout=5)
        assert reply.label == int(logits[0].argmax()), i
        np.testing.assert_array_equal(np.array(reply.probabilities, np.float32), probabilities[0])

    card = json.loads((model_dir / "card.json").read_text())
    target = f"127.0.0.1:{served.port}"
    result = subprocess.run(
        foldserve_command("predict", "--target", target, "--summary", "--format", "json"),
        capture_output=True, text=True, cwd=REPO, env=env(), timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["count"] == len(test)
    assert summary["accuracy"] == pytest.approx(card["test_accuracy"], abs=1e-12)
    # The clean test split, twice over by now: the trained model's monitor sees no shift.
    tapped = model.training.shift_reference is not None
    assert summary["shift"]["enabled"] is tapped
    assert not tapped or (summary["shift"]["alarm"] is False and summary["shift"]["examples"] > 0)
    text = subprocess.run(
        foldserve_command("predict", "--target", target, "--summary"),
        capture_output=True, text=True, cwd=REPO, env=env(), timeout=120,
    )  # fmt: skip
    assert re.search(rf"accuracy: {card['test_accuracy']:.4f} \(", text.stdout), text.stdout
