"""The shift monitor: thresholds, the alarm and its first firing, settings, threads; and its
series over a real server (Prometheus gauges, DescribeModel, `foldserve predict --summary`)."""

import threading
import urllib.request
from argparse import Namespace
from dataclasses import replace
from io import StringIO

import numpy as np
import onnx
import pytest

from foldserve import contract
from foldserve._proto.foldserve.v1 import predictor_pb2 as pb
from foldserve._proto.foldserve.v1 import predictor_pb2_grpc as pb_grpc
from foldserve.client.client import run_predict
from foldserve.contract import TAPS
from foldserve.core.loading import load_model
from foldserve.core.model import ModelError
from foldserve.core.runner import monitor_for
from foldserve.core.shift.monitor import ShiftMonitor
from foldserve.core.shift.settings import ShiftSettings
from tests.service.model_files import write_tapped_model

MEAN = [0.0, 1.0, 2.0, 3.0]


@pytest.fixture(scope="module")
def tapped_path(tmp_path_factory):
    return write_tapped_model(tmp_path_factory.mktemp("tapped") / "model.onnx", MEAN)


@pytest.fixture(scope="module")
def tapped(tapped_path):
    return load_model(tapped_path)


def _feed(monitor: ShiftMonitor, model, x: np.ndarray) -> None:
    for row in x:
        outputs = model.run_classifier(row[None, :].astype(np.float32), taps=True)
        monitor.observe(outputs[TAPS], outputs["logits"].argmax(axis=1))


def _clean(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(MEAN, 1.0, (n, len(MEAN)))


def test_the_plain_session_has_no_taps_and_answers_alike(tapped):
    plain = [o.name for o in tapped.session.get_outputs()]
    assert plain == ["logits", "probabilities"]
    assert TAPS in [o.name for o in tapped.shift.tapped_session.get_outputs()]
    x = _clean(5).astype(np.float32)
    plain, with_taps = tapped.run_classifier(x), tapped.run_classifier(x, taps=True)
    np.testing.assert_array_equal(plain["logits"], with_taps["logits"])
    assert load_model(tapped.path, monitor=False).shift is None


def test_clean_traffic_stays_below_the_thresholds(tapped):
    monitor = monitor_for(tapped, ShiftSettings())
    _feed(monitor, tapped, _clean(300))
    shot = monitor.snapshot()
    assert shot.names == ("0", "1") and shot.requests == 300
    assert not shot.alarm and shot.first_alarm_request == 0
    assert max(shot.scores) < 1.0 and shot.thresholds == (1.0, 1.0)


def test_a_shift_alarms_and_the_first_alarm_is_remembered(tapped):
    monitor = monitor_for(tapped, ShiftSettings(check_every=1))
    _feed(monitor, tapped, _clean(50))
    _feed(monitor, tapped, _clean(50, seed=1) + 3.0)  # every input 3 stds up
    shot = monitor.snapshot()
    assert shot.alarm and 50 < shot.first_alarm_request < 60
    assert set(shot.first_alarm) <= {"0", "1", "prior"} and "0" in shot.first_alarm
    assert shot.scores[0] > 2.0 and shot.peaks[0] >= shot.scores[0]
    _feed(monitor, tapped, _clean(300, seed=2))  # back to normal: the alarm clears
    later = monitor.snapshot()
    assert not later.alarm and later.first_alarm_request == shot.first_alarm_request


def test_checks_every_n_examples_and_margins_are_settings(tapped):
    settings = ShiftSettings(check_every=16, margin=3.0, prior_margin=4.0)
    monitor = monitor_for(tapped, settings)
    assert monitor.snapshot().thresholds == pytest.approx((2.0, 2.0))  # 3 x clean max 2/3
    assert monitor.snapshot().prior_threshold == pytest.approx(0.6)
    _feed(monitor, tapped, _clean(20) + 5.0)
    assert monitor.snapshot().first_alarm_request == 16  # found at the first check
    assert monitor_for(tapped, ShiftSettings(enabled=False)) is None


def test_concurrent_observers_lose_no_examples(tapped):
    monitor = monitor_for(tapped, ShiftSettings())
    outputs = tapped.run_classifier(_clean(1).astype(np.float32), taps=True)
    row, label = outputs[TAPS], outputs["logits"].argmax(axis=1)

    def work():
        for _ in range(500):
            monitor.observe(row, label)
            monitor.snapshot() if _ % 100 == 0 else None

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert monitor.snapshot().requests == 2000


def test_a_calibration_that_does_not_fit_the_taps_refuses_the_file(tmp_path):
    path = write_tapped_model(tmp_path / "model.onnx", MEAN)
    proto = onnx.load(path)
    meta = contract.from_properties({p.key: p.value for p in proto.metadata_props})
    wrong = replace(meta.shift_calibration, class_priors=(0.5, 0.25, 0.25))
    onnx.helper.set_model_props(
        proto, contract.to_properties(replace(meta, shift_calibration=wrong))
    )
    onnx.save(proto, path)
    with pytest.raises(ModelError, match="3 class priors for 2 classes"):
        load_model(path)
    assert load_model(path, monitor=False).shift is None  # the monitor off: it serves


def _sample(served, name, **labels):
    return served.sample(name, **labels)


def test_server_exports_scores_thresholds_and_alarm(serve, tapped_path):
    served = serve(tapped_path, metrics_http=True, shift_check_every=1)
    stub = pb_grpc.PredictorStub(served.channel)
    for row in _clean(200):
        stub.Predict(pb.PredictRequest(features=row.tolist()), timeout=5)
    assert _sample(served, "foldserve_shift_alarm") == 0.0
    assert _sample(served, "foldserve_shift_threshold", layer="1") == 1.0
    assert 0 < _sample(served, "foldserve_shift_score", layer="0") < 1.0
    assert _sample(served, "foldserve_shift_prior_threshold") == 0.3
    for row in _clean(100, seed=3) + 4.0:
        stub.Predict(pb.PredictRequest(features=row.tolist()), timeout=5)
    assert _sample(served, "foldserve_shift_alarm") == 1.0
    score = _sample(served, "foldserve_shift_score", layer="0")
    shift = stub.DescribeModel(pb.DescribeModelRequest(), timeout=5).shift
    assert shift.enabled and shift.examples == 300 and shift.alarm
    assert 200 < shift.first_alarm_example < 215
    layer = {entry.layer: entry for entry in shift.layers}["0"]
    assert layer.score == pytest.approx(score) and layer.threshold == 1.0
    assert list(layer.reference_mean) == MEAN and list(layer.reference_var) == [1.0] * 4
    assert layer.side == contract.BN_INPUT and shift.half_life == 10.0
    port = served.running.metrics_port
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    assert 'foldserve_shift_score{layer="1",model="foldserve"' in text
    assert "foldserve_shift_alarm{" in text


def test_predict_summary_prints_the_scores_the_server_reports(serve, tapped_path):
    served = serve(tapped_path)
    lines = "\n".join(f"[{', '.join(map(str, row))}]" for row in _clean(30) + 4.0)
    out = StringIO()
    args = Namespace(
        target=f"127.0.0.1:{served.port}", model_name="", data="-", label_column="label",
        split=None, summary=True, format="text", limit=None, timeout=5.0,
    )  # fmt: skip
    assert run_predict(args, stdin=StringIO(lines), out=out) == 0
    text = out.getvalue()
    assert "shift monitor: ALARM after 30 examples (first alarm at example" in text
    assert "  0              score" in text and "threshold 1 " in text


def test_monitor_off_serves_without_taps_or_series(serve, tapped_path):
    served = serve(tapped_path, shift_monitor=False)
    stub = pb_grpc.PredictorStub(served.channel)
    stub.Predict(pb.PredictRequest(features=MEAN), timeout=5)
    assert _sample(served, "foldserve_shift_alarm") is None
    shift = stub.DescribeModel(pb.DescribeModelRequest(), timeout=5).shift
    assert not shift.enabled and "--shift-monitor off" in shift.reason
    assert served.running.repository.model().latest.model.shift is None


def test_a_model_without_taps_has_no_monitor(served):
    stub = pb_grpc.PredictorStub(served.channel)
    shift = stub.DescribeModel(pb.DescribeModelRequest(), timeout=5).shift
    assert not shift.enabled and "no taps" in shift.reason
    assert _sample(served, "foldserve_shift_score", layer="0") is None


def test_kept_examples_fold_into_the_same_scores_as_one_update_each(tapped):
    """The monitor folds single examples in batches; its scores are those of one update per
    example (to rounding), at every check and every snapshot in between."""
    settings = ShiftSettings(check_every=5)
    batched = monitor_for(tapped, settings)
    reference = batched.statistic.new_state()
    x = np.random.default_rng(3).normal(MEAN, 2.0, (203, len(MEAN))).astype(np.float32)
    for i, row in enumerate(x):
        outputs = tapped.run_classifier(row[None, :], taps=True)
        labels = outputs["logits"].argmax(axis=1)
        batched.observe(outputs[TAPS], labels)
        reference.add(outputs[TAPS], labels)
        if i % 37 == 0 or i == len(x) - 1:
            shot = batched.snapshot()
            expected = batched.statistic.scores(reference)
            np.testing.assert_allclose(
                [*shot.scores, shot.prior_score], expected, rtol=1e-9, atol=1e-12
            )
            assert shot.requests == i + 1
