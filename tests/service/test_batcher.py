"""The micro-batcher: shared runs answer each example as if alone; a lone call runs at once; a
run's failure, deadlines and metrics stay per call; and over gRPC with `--batching on`."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from foldserve._proto.foldserve.v1 import predictor_pb2 as pb
from foldserve._proto.foldserve.v1 import predictor_pb2_grpc as pb_grpc
from foldserve.core.batch_settings import BatchSettings
from foldserve.core.batcher import Batcher
from foldserve.core.errors import RequestError, Status
from foldserve.core.metrics import Metrics
from foldserve.core.runner import ModelRunner

CALLS = 64
OUTPUTS = ("logits", "probabilities")


def _slow(run, seconds: float = 2e-3):
    """A model run that takes long enough for calls to queue behind it."""

    def slow(batch: np.ndarray):
        time.sleep(seconds)
        return run(batch)

    return slow


def _examples(n: int, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).random((n, 64)) * 16).astype(np.float32)


def _in_threads(work, items, threads: int = 16) -> list:
    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(work, items))


def test_an_answer_does_not_depend_on_its_batch_mates(tiny_model) -> None:
    batcher = Batcher(_slow(tiny_model.run_classifier), max_batch=64)
    x = _examples(CALLS)
    got = _in_threads(lambda row: batcher.run(row[None, :]), x)
    assert batcher.runs < CALLS  # runs were shared
    for row, outputs in zip(x, got, strict=True):
        alone = tiny_model.run_classifier(row[None, :])
        for name, value in alone.items():
            assert outputs[name].shape == (1, 10)
            np.testing.assert_allclose(outputs[name], value, rtol=1e-6, atol=1e-6)


def test_a_lone_call_runs_at_once_and_alone(tiny_model) -> None:
    batcher = Batcher(tiny_model.run_classifier, max_batch=64)
    for row in _examples(5):
        assert batcher.run(row[None, :])["logits"].shape == (1, 10)
    assert batcher.runs == 5


def test_runs_hold_at_most_max_batch_examples(tiny_model) -> None:
    sizes: list[int] = []

    def run(batch: np.ndarray):
        sizes.append(len(batch))
        return _slow(tiny_model.run_classifier)(batch)

    batcher = Batcher(run, max_batch=8)
    _in_threads(lambda row: batcher.run(row[None, :]), _examples(CALLS))
    assert sum(sizes) == CALLS and max(sizes) <= 8 and len(sizes) < CALLS


def test_a_failed_run_fails_its_calls_only(tiny_model) -> None:
    failing = threading.Event()

    def run(batch: np.ndarray):
        time.sleep(2e-3)
        if failing.is_set():
            raise RuntimeError("the model failed")
        return tiny_model.run_classifier(batch)

    batcher = Batcher(run, max_batch=64)
    failing.set()
    outcomes = _in_threads(lambda row: _outcome(batcher, row), _examples(32))
    assert all(isinstance(o, RuntimeError) for o in outcomes)
    failing.clear()
    later = _in_threads(lambda row: _outcome(batcher, row), _examples(8))
    assert all(o.shape == (1, 10) for o in later)


def _outcome(batcher: Batcher, row: np.ndarray):
    try:
        return batcher.run(row[None, :])["logits"]
    except RuntimeError as exc:
        return exc


def _runner(model, min_in_flight: int = 0) -> tuple[ModelRunner, CollectorRegistry]:
    registry = CollectorRegistry()
    metrics = Metrics(registry, "m", process=False).for_version(
        "1", sha256="-", opset=0, foldserve_version="-", class_labels=model.class_labels
    )
    settings = BatchSettings(True, min_in_flight=min_in_flight)
    return ModelRunner(model, metrics, batching=settings, in_flight=lambda: 99), registry


def test_metrics_and_deadlines_stay_per_call(tiny_model) -> None:
    runner, registry = _runner(tiny_model)
    runner.batcher._run = _slow(runner.batcher._run)  # queue calls behind each run
    x = _examples(CALLS)
    past = time.monotonic() - 1.0

    def call(i: int):
        deadline = past if i % 8 == 0 else None  # every 8th call's deadline has passed
        try:
            return runner.run({"input": x[i : i + 1]}, OUTPUTS, deadline)["logits"]
        except RequestError as exc:
            return exc.status

    outcomes = _in_threads(call, range(CALLS))
    expired = [o for o in outcomes if o is Status.DEADLINE_EXCEEDED]
    assert len(expired) == CALLS // 8
    answered = CALLS - len(expired)
    assert runner.batcher.runs < answered
    labels = {"model": "m", "version": "1"}
    sample = registry.get_sample_value
    assert sample("foldserve_model_compute_duration_seconds_count", labels) == answered
    predicted = sum(
        sample("foldserve_predictions_total", {**labels, "class": c}) or 0.0
        for c in tiny_model.class_labels
    )
    assert predicted == answered


def test_below_min_in_flight_calls_run_alone(tiny_model) -> None:
    runner, _ = _runner(tiny_model, min_in_flight=100)
    for row in _examples(3):
        runner.run({"input": row[None, :]}, OUTPUTS, None)
    assert runner.batcher.runs == 0


@pytest.mark.parametrize("batching", [True, False])
def test_concurrent_predicts_over_grpc(serve, tiny_model, batching: bool) -> None:
    served = serve(tiny_model, batching=batching)
    stub = pb_grpc.PredictorStub(served.channel)
    x = _examples(CALLS, seed=1)
    replies = _in_threads(
        lambda i: stub.Predict(pb.PredictRequest(features=x[i].tolist(), request_id=str(i))),
        range(CALLS),
        threads=CALLS,
    )
    for i, reply in enumerate(replies):
        alone = tiny_model.run_classifier(x[i : i + 1])["probabilities"][0]
        assert reply.request_id == str(i)
        np.testing.assert_allclose(reply.probabilities, alone, rtol=1e-6, atol=1e-6)
    assert served.sample("foldserve_requests_total", method="Predict", code="OK") == CALLS
    assert served.sample("foldserve_request_duration_seconds_count", method="Predict") == CALLS
    assert served.sample("foldserve_model_compute_duration_seconds_count") == CALLS
