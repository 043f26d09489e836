"""The shift monitor of a model foldserve did not train and nobody calibrated: its input BN's
statistics (recorded by `foldserve fold`) stand in for a reference sample (a Gaussian one)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from foldserve._proto.foldserve.v1 import predictor_pb2 as pb
from foldserve._proto.foldserve.v1 import predictor_pb2_grpc as pb_grpc
from foldserve.core.loading import load_model
from tests.service.conftest import ServeFactory
from tests.service.foreign_files import write_folded_classifier, write_logits_model

WEIGHTS = np.random.default_rng(4).normal(size=(5, 3)).astype(np.float32)
MEAN, VAR = [0.0, 1.0, -1.0, 2.0, 0.5], [1.0, 4.0, 0.25, 1.0, 2.0]


def stream(served, rows: np.ndarray) -> None:
    stub = pb_grpc.PredictorStub(served.channel)
    requests = (pb.PredictRequest(features=row.tolist()) for row in rows)
    assert all(a.HasField("prediction") for a in stub.PredictStream(requests, timeout=30))


def test_inputs_like_the_bn_statistics_score_low_and_shifted_ones_alarm(
    tmp_path: Path, serve: ServeFactory
) -> None:
    path = write_folded_classifier(tmp_path / "model.onnx", WEIGHTS, MEAN, VAR)
    served = serve(path, shift_check_every=8)
    rng = np.random.default_rng(7)
    clean = rng.normal(MEAN, np.sqrt(VAR), size=(1000, 5)).astype(np.float32)
    stream(served, clean)
    assert 0 <= served.sample("foldserve_shift_score", summary="input/level") < 1
    assert served.sample("foldserve_shift_alarm") == 0
    shifted = clean[:100] + 2.0 * np.sqrt(VAR).astype(np.float32)  # every feature two stds up
    stream(served, shifted)
    assert served.sample("foldserve_shift_score", summary="input/level") > 1
    assert served.sample("foldserve_shift_alarm") == 1
    description = pb_grpc.PredictorStub(served.channel).DescribeModel(pb.DescribeModelRequest())
    shift = description.shift
    assert shift.enabled and shift.alarm and list(shift.first_alarm) == ["input"]
    assert 1000 < shift.first_alarm_example <= 1010
    assert shift.reference_data.startswith("Gaussian sample of the input BatchNorm")
    assert shift.tests and shift.arl == 1e6
    assert [layer.side for layer in shift.layers] == ["model_input"]
    np.testing.assert_allclose(shift.layers[0].reference_mean, MEAN, atol=0.1)
    assert not shift.prior.threshold  # the class priors are unknown: no class tests


def test_no_input_bn_no_monitor(tmp_path: Path, serve: ServeFactory) -> None:
    served = serve(write_logits_model(tmp_path / "model.onnx", WEIGHTS))
    assert served.running.repository.model().latest.runner.monitor is None
    description = pb_grpc.PredictorStub(served.channel).DescribeModel(pb.DescribeModelRequest())
    assert not description.shift.enabled
    assert "foldserve calibrate" in description.shift.reason


def test_the_monitor_can_be_off(tmp_path: Path, serve: ServeFactory) -> None:
    path = write_folded_classifier(tmp_path / "model.onnx", WEIGHTS, MEAN, VAR)
    assert load_model(path).shift is not None
    served = serve(path, shift_monitor=False)
    assert served.running.repository.model().latest.runner.monitor is None
    description = pb_grpc.PredictorStub(served.channel).DescribeModel(pb.DescribeModelRequest())
    assert description.shift.reason == "the server runs with --shift-monitor off"
