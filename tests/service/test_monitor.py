"""The shift monitor: its sequential tests, the alarm at the exact example and since when, settings,
threads; and its series over a real server (Prometheus gauges, DescribeModel, `foldserve predict
--summary`)."""

import json
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
GROUPS = ("input", "1", "probabilities")


@pytest.fixture(scope="module")
def tapped_path(tmp_path_factory):
    return write_tapped_model(tmp_path_factory.mktemp("tapped") / "model.onnx", MEAN)


@pytest.fixture(scope="module")
def tapped(tapped_path):
    return load_model(tapped_path)


def _feed(monitor: ShiftMonitor, model, x: np.ndarray) -> None:
    for row in x.astype(np.float32):
        outputs = model.run_classifier(row[None, :], taps=True)
        labels = outputs["logits"].argmax(axis=1)
        monitor.observe(model.shift.rows(row[None, :], outputs), labels)


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


def test_clean_traffic_raises_no_alarm(tapped):
    monitor = monitor_for(tapped, ShiftSettings())
    _feed(monitor, tapped, _clean(1000))
    shot = monitor.snapshot()
    assert shot.names == GROUPS and shot.examples == 1000
    assert not shot.alarm and shot.first_alarm_example == 0 and max(shot.summary_scores) < 1
    # Per summary four tests; per class "rarer" (two classes at 1/2 each cannot double, so no
    # "more": one becoming more frequent is the other becoming rarer). Each test's share of the
    # stated ARL is equal, counting the class tests that could not hold it.
    assert len(shot.tests) == 4 * len(shot.summary_names[:-1]) + 2
    assert [t.name for t in shot.tests[-2:]] == ["classes/class_0:rarer", "classes/class_1:rarer"]
    assert shot.arl == 1e6 and shot.test_arl == pytest.approx((len(shot.tests) + 2) * 1e6)


def test_a_shift_alarms_at_its_example_and_says_what_fired_and_since_when(tapped):
    monitor = monitor_for(tapped, ShiftSettings())
    _feed(monitor, tapped, _clean(300))
    _feed(monitor, tapped, _clean(50, seed=1) + 3.0)  # every input 3 stds up, from example 301
    shot = monitor.snapshot()
    assert shot.alarm and 300 < shot.first_alarm_example <= 315
    assert "input/level:mean+" in shot.first_alarm_tests and "input" in shot.first_alarm
    assert 250 < shot.first_alarm_change <= 301  # the change it estimates began about then
    level = {t.name: t for t in shot.tests}["input/level:mean+"]
    assert level.alarm and level.alarm_example == shot.first_alarm_example
    summaries = dict(zip(shot.summary_names, shot.summary_since, strict=True))
    assert summaries["input/level"] == shot.first_alarm_example
    _feed(monitor, tapped, _clean(300, seed=2))  # back to normal: the alarm clears
    later = monitor.snapshot()
    assert not later.alarm and later.first_alarm_example == shot.first_alarm_example
    assert max(later.summary_peaks) >= 1


def test_where_an_alarm_is_found_does_not_depend_on_how_often_it_folds(tapped):
    x = np.concatenate([_clean(100), _clean(40, seed=1) * 1.5 + 1.0])
    found = set()
    for check_every in (1, 7, 16, 64):
        monitor = monitor_for(tapped, ShiftSettings(check_every=check_every))
        _feed(monitor, tapped, x)
        shot = monitor.snapshot()
        found.add((shot.first_alarm_example, shot.first_alarm_tests))
    batched = monitor_for(tapped, ShiftSettings())
    outputs = tapped.run_classifier(x.astype(np.float32), taps=True)
    rows = tapped.shift.rows(x.astype(np.float32), outputs)
    batched.observe(rows, outputs["logits"].argmax(axis=1))  # one batch of 140
    shot = batched.snapshot()
    found.add((shot.first_alarm_example, shot.first_alarm_tests))
    assert len(found) == 1 and next(iter(found))[0] > 100


def test_the_arl_is_a_setting_and_the_monitor_can_be_off(tapped):
    strict = monitor_for(tapped, ShiftSettings(arl=1e9)).snapshot()
    loose = monitor_for(tapped, ShiftSettings(arl=1e3)).snapshot()
    assert strict.arl == 1e9 and loose.arl == 1e3
    assert strict.tests[0].threshold > loose.tests[0].threshold
    assert monitor_for(tapped, ShiftSettings(enabled=False)) is None


def test_concurrent_observers_lose_no_examples(tapped):
    monitor = monitor_for(tapped, ShiftSettings())
    row = _clean(1).astype(np.float32)
    outputs = tapped.run_classifier(row, taps=True)
    rows, label = tapped.shift.rows(row, outputs), outputs["logits"].argmax(axis=1)

    def work():
        for _ in range(500):
            monitor.observe(rows, label)
            monitor.snapshot() if _ % 100 == 0 else None

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert monitor.snapshot().examples == 2000


def test_a_reference_that_does_not_fit_the_model_refuses_the_file(tmp_path):
    path = write_tapped_model(tmp_path / "model.onnx", MEAN)
    proto = onnx.load(path)
    meta = contract.from_properties({p.key: p.value for p in proto.metadata_props})
    wrong = replace(meta.shift_reference, class_priors=(0.5, 0.25, 0.25))
    onnx.helper.set_model_props(proto, contract.to_properties(replace(meta, shift_reference=wrong)))
    onnx.save(proto, path)
    with pytest.raises(ModelError, match="3 class priors for 2 classes"):
        load_model(path)
    assert load_model(path, monitor=False).shift is None  # the monitor off: it serves


def test_a_reference_file_beside_the_model_wins(tmp_path, tapped):
    path = write_tapped_model(tmp_path / "model.onnx", MEAN)
    beside = replace(tapped.shift.reference, arl=123.0, data="beside")
    (tmp_path / contract.SHIFT_REFERENCE_FILE).write_text(json.dumps(beside.to_json()))
    model = load_model(path)
    assert model.shift.reference.data == "beside" and "beside" in model.shift.origin
    (tmp_path / contract.SHIFT_REFERENCE_FILE).write_text("{not json")
    with pytest.raises(ModelError, match=r"shift-reference\.json is not valid JSON"):
        load_model(path)


def _sample(served, name, **labels):
    return served.sample(name, **labels)


def test_server_exports_scores_alarm_and_since_when(serve, tapped_path):
    served = serve(tapped_path, metrics_http=True, shift_check_every=1)
    stub = pb_grpc.PredictorStub(served.channel)
    for row in _clean(200):
        stub.Predict(pb.PredictRequest(features=row.tolist()), timeout=5)
    assert _sample(served, "foldserve_shift_alarm") == 0.0
    assert 0 <= _sample(served, "foldserve_shift_score", summary="input/level") < 1.0
    assert _sample(served, "foldserve_shift_examples") == 200
    assert _sample(served, "foldserve_shift_arl_examples") == 1e6
    for row in _clean(100, seed=3) + 4.0:
        stub.Predict(pb.PredictRequest(features=row.tolist()), timeout=5)
    assert _sample(served, "foldserve_shift_alarm") == 1.0
    first = _sample(served, "foldserve_shift_first_alarm_example")
    assert 200 < first <= 210
    assert _sample(served, "foldserve_shift_score", summary="input/level") > 1.0
    assert _sample(served, "foldserve_shift_alarm_example", summary="input/level") == first
    shift = stub.DescribeModel(pb.DescribeModelRequest(), timeout=5).shift
    assert shift.enabled and shift.examples == 300 and shift.alarm
    assert shift.first_alarm_example == first and "input" in shift.first_alarm
    layer = {entry.layer: entry for entry in shift.layers}["input"]
    assert layer.score > 1 and layer.threshold == 1.0 and layer.side == contract.MODEL_INPUT
    assert layer.reference_mean == pytest.approx(MEAN, abs=0.1)
    port = served.running.metrics_port
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    assert 'foldserve_shift_score{model="foldserve",summary="1/pc1"' in text
    assert "foldserve_shift_alarm{" in text


def test_describe_says_every_test_what_fired_and_since_when(serve, tapped_path):
    served = serve(tapped_path, shift_check_every=1)
    stub = pb_grpc.PredictorStub(served.channel)
    for row in [*_clean(100), *(_clean(30, seed=4) - 4.0)]:
        stub.Predict(pb.PredictRequest(features=row.tolist()), timeout=5)
    shift = stub.DescribeModel(pb.DescribeModelRequest(), timeout=5).shift
    assert shift.arl == 1e6 and shift.reference_data == "synthetic" and not shift.shared
    assert 100 < shift.first_alarm_example <= 110 and shift.first_alarm_change <= 101
    tests = {t.name: t for t in shift.tests}
    assert tests["input/level:mean-"].alarm and tests["input/level:mean-"].statistic > 1
    assert set(shift.first_alarm_tests) <= {t.name for t in shift.tests if t.peak >= 1}
    assert shift.layers[0].summaries == ["level", "pc1", "pc2", "residual"]


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
    assert "  input          score" in text and "threshold 1 " in text


def test_monitor_off_serves_without_taps_or_series(serve, tapped_path):
    served = serve(tapped_path, shift_monitor=False)
    stub = pb_grpc.PredictorStub(served.channel)
    stub.Predict(pb.PredictRequest(features=MEAN), timeout=5)
    assert _sample(served, "foldserve_shift_alarm") is None
    shift = stub.DescribeModel(pb.DescribeModelRequest(), timeout=5).shift
    assert not shift.enabled and "--shift-monitor off" in shift.reason
    assert served.running.repository.model().latest.model.shift is None


def test_a_model_without_a_reference_has_no_monitor(served):
    stub = pb_grpc.PredictorStub(served.channel)
    shift = stub.DescribeModel(pb.DescribeModelRequest(), timeout=5).shift
    assert not shift.enabled and "no shift reference" in shift.reason
    assert _sample(served, "foldserve_shift_score", summary="input/level") is None


def test_a_batched_run_gives_the_statistics_of_one_update_each(tapped):
    """Folding a batch walks every CUSUM over it in closed form: the same statistics as one
    example at a time."""
    x = np.random.default_rng(3).normal(MEAN, 2.0, (203, len(MEAN))).astype(np.float32)
    one = monitor_for(tapped, ShiftSettings(check_every=1))
    many = monitor_for(tapped, ShiftSettings(check_every=64))
    _feed(one, tapped, x)
    _feed(many, tapped, x)
    a, b = one.snapshot(), many.snapshot()
    np.testing.assert_allclose(
        [t.statistic for t in a.tests], [t.statistic for t in b.tests], rtol=1e-9, atol=1e-9
    )
    assert [t.change_example for t in a.tests] == [t.change_example for t in b.tests]
    assert a.examples == b.examples == 203
