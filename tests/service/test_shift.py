import threading

import numpy as np
import pytest

from service.core.shift import InputShiftMonitor
from tests.service.model_files import input_bn, metadata, write_tiny_model


def _monitor(**kwargs) -> InputShiftMonitor:
    return InputShiftMonitor([0.0, 10.0, 5.0], [1.0, 4.0, 0.25], 0.0, (3,), **kwargs)


def test_traffic_like_the_training_data_scores_near_zero():
    monitor = _monitor()
    rng = np.random.default_rng(0)
    for _ in range(200):
        monitor.observe(rng.normal([0.0, 10.0, 5.0], [1.0, 2.0, 0.5], size=(5, 3)))
    assert monitor.examples_seen == 1000
    assert monitor.score() < 0.15


def test_a_shifted_feature_raises_the_score_by_its_shift_in_training_stds():
    monitor = _monitor(half_life=50)
    rng = np.random.default_rng(1)
    for _ in range(1000):  # feature 1 moved by +3 training stds (std 2 → +6)
        monitor.observe(rng.normal([0.0, 16.0, 5.0], [1.0, 2.0, 0.5], size=(1, 3)))
    assert monitor.score() == pytest.approx(3.0 / 3, abs=0.15)


def test_channel_shift_is_clipped_so_dead_features_cannot_dominate():
    monitor = InputShiftMonitor([0.0, 0.0], [0.0, 1.0], 1e-5, (2,), half_life=1)
    monitor.observe(np.array([[1000.0, 0.0]] * 50))
    assert monitor.score() == pytest.approx(10.0 / 2, abs=1e-6)


def test_images_are_compared_per_channel():
    monitor = InputShiftMonitor([0.5], [0.01], 0.0, (1, 4, 4), half_life=1)
    monitor.observe(np.full((20, 1, 4, 4), 0.5))
    assert monitor.score() == pytest.approx(0.0, abs=1e-9)
    monitor.observe(np.full((20, 16), 0.8))  # flat rows work too
    assert monitor.score() == pytest.approx(3.0, rel=1e-3)


def test_of_takes_the_input_bn_or_none():
    stats = input_bn([0.0, 0.0], [1.0, 1.0])
    assert InputShiftMonitor.of(stats, (2,)) is not None
    assert InputShiftMonitor.of(None, (2,)) is None
    with pytest.raises(ValueError, match="2 channels, but one example has shape \\[3\\]"):
        InputShiftMonitor.of(stats, (3,))


def test_concurrent_observers_lose_no_examples():
    monitor = _monitor()
    batch = np.zeros((2, 3))
    threads = [
        threading.Thread(target=lambda: [monitor.observe(batch) for _ in range(500)])
        for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert monitor.examples_seen == 4000


def test_server_exports_the_shift_score_of_live_predict_traffic(tmp_path, serve):
    from service._proto.foldserve.v1 import predictor_pb2 as pb
    from service._proto.foldserve.v1 import predictor_pb2_grpc as pb_grpc
    from service.core.model import load_model

    meta = metadata((4,), ["a", "b"], bn_stats=(input_bn([0.0, 1.0, 2.0, 3.0], [1.0] * 4),))
    path = write_tiny_model(tmp_path / "model.onnx", features=4, classes=2, meta=meta)
    served = serve(load_model(path))
    stub = pb_grpc.PredictorStub(served.channel)
    assert served.sample("foldserve_input_shift_score") == 0.0
    for _ in range(300):  # every feature 2 training stds above its mean
        stub.Predict(pb.PredictRequest(features=[2.0, 3.0, 4.0, 5.0]), timeout=5)
    assert served.sample("foldserve_input_shift_score") == pytest.approx(
        2.0 * (1 - 0.5 ** (300 / 500)), rel=1e-6
    )


def test_no_input_bn_no_shift_metric(served):
    assert served.sample("foldserve_input_shift_score") is None
