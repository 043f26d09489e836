"""One-example runs through per-thread IO bindings: the same answers as `Model.run`, and an
answer is never overwritten by the thread's next run."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np

from foldserve.core.binding import BoundRuns


def _rows(n: int) -> np.ndarray:
    return (np.random.default_rng(0).random((n, 1, 64)) * 16).astype(np.float32)


def test_bound_runs_answer_as_the_session_does(tiny_model) -> None:
    bound = BoundRuns(tiny_model.session, "input", (64,), tiny_model.output_names)
    rows = _rows(8)
    answers = [bound.run(row) for row in rows]  # kept across runs: nothing aliases a buffer
    for row, got in zip(rows, answers, strict=True):
        expected = tiny_model.run_classifier(row)
        assert list(got) == list(expected)
        for name, value in expected.items():
            np.testing.assert_array_equal(got[name], value)


def test_threads_get_their_own_bindings(tiny_model) -> None:
    bound = BoundRuns(tiny_model.session, "input", (64,), tiny_model.output_names)
    rows = _rows(200)
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(bound.run, rows))
    for row, got in zip(rows, answers, strict=True):
        np.testing.assert_array_equal(got["logits"], tiny_model.run_classifier(row)["logits"])
