"""One shift monitor per model version across processes: the state the server's workers share
(`core.shift.shared`), exercised with real processes (multiprocessing, spawned as the
supervisor spawns its workers)."""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path

import numpy as np
import pytest

from foldserve.core.loading import load_model
from foldserve.core.runner import monitor_for
from foldserve.core.shift.settings import SHIFT_STATE_DIR_ENV, ShiftSettings
from foldserve.core.shift.shared import shared_state_dir
from foldserve.core.shift.state import H_WRITING
from foldserve.server.app import shift_settings
from foldserve.server.config import ServeConfig
from tests.service.model_files import write_tapped_model

MEAN = [0.0, 1.0, 2.0, 3.0]
CHUNK = 10


def _stream(seed: int = 0) -> np.ndarray:
    """300 clean examples, then every input 1.5 stds up."""
    rng = np.random.default_rng(seed)
    clean = rng.normal(MEAN, 1.0, (300, len(MEAN)))
    return np.concatenate([clean, rng.normal(MEAN, 1.0, (100, len(MEAN))) + 1.5])


def _monitor(path: str, state_dir: str | None):
    model = load_model(path)
    return model, monitor_for(model, ShiftSettings(check_every=1, state_dir=state_dir))


def _feed(model, monitor, x: np.ndarray) -> None:
    for row in x.astype(np.float32):
        outputs = model.run_classifier(row[None, :], taps=True)
        monitor.observe(model.shift.rows(row[None, :], outputs), outputs["logits"].argmax(1))


def _worker(path: str, state_dir: str, which: int, barrier, results) -> None:
    """Feed every other chunk of the stream, in lockstep with the other worker."""
    model, monitor = _monitor(path, state_dir)
    x = _stream()
    for start in range(0, len(x), 2 * CHUNK):
        for turn in (0, 1):  # worker 0's chunk, then worker 1's
            if turn == which:
                _feed(model, monitor, x[start + which * CHUNK : start + (which + 1) * CHUNK])
            barrier.wait()
    results.put((which, os.getpid()))
    monitor.close()


def _feed_then_die(path: str, state_dir: str, count: int) -> None:
    model, monitor = _monitor(path, state_dir)
    _feed(model, monitor, _stream()[:count])
    os._exit(9)  # killed: no close, no cleanup


@pytest.fixture(scope="module")
def model_path(tmp_path_factory) -> str:
    return str(write_tapped_model(tmp_path_factory.mktemp("shared") / "model.onnx", MEAN))


@pytest.fixture
def state_dir(tmp_path: Path) -> str:
    folder = tmp_path / "state"
    folder.mkdir()
    return str(folder)


def _single_alarm(model_path: str, x: np.ndarray) -> tuple[int, tuple[str, ...]]:
    model, monitor = _monitor(model_path, None)
    _feed(model, monitor, x)
    shot = monitor.snapshot()
    return shot.first_alarm_example, shot.first_alarm_tests


def test_two_processes_feed_one_monitor_and_alarm_as_one_process_would(model_path, state_dir):
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(2), context.Queue()
    workers = [
        context.Process(target=_worker, args=(model_path, state_dir, which, barrier, results))
        for which in (0, 1)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
        assert worker.exitcode == 0
    pids = {results.get(timeout=5)[1] for _ in workers}
    _, monitor = _monitor(model_path, state_dir)  # a third process's view: the same state
    shot = monitor.snapshot()
    assert shot.shared and shot.examples == 400
    assert set(shot.contributors) == pids and sum(shot.contributors.values()) == 400
    # Chunks interleaved A, B, A, B... are the stream in order: the same alarm, same example.
    expected = _single_alarm(model_path, _stream())
    assert 300 < expected[0] < 400
    assert (shot.first_alarm_example, shot.first_alarm_tests) == expected


def test_the_state_survives_a_worker_that_dies(model_path, state_dir):
    context = multiprocessing.get_context("spawn")
    dead = context.Process(target=_feed_then_die, args=(model_path, state_dir, 320))
    dead.start()
    dead.join(120)
    assert dead.exitcode == 9
    model, restarted = _monitor(model_path, state_dir)  # the restarted worker attaches by name
    assert restarted.snapshot().examples == 320
    _feed(model, restarted, _stream()[320:])
    shot = restarted.snapshot()
    assert (shot.first_alarm_example, shot.first_alarm_tests) == _single_alarm(
        model_path, _stream()
    )
    assert shot.rebuilt == 0


def test_a_state_left_half_written_is_rebuilt(model_path, state_dir):
    model, monitor = _monitor(model_path, state_dir)
    _feed(model, monitor, _stream()[:50])
    with monitor.state.locked() as view:
        view.header[H_WRITING] = 1.0  # as if a process died inside a fold
    _, other = _monitor(model_path, state_dir)
    shot = other.snapshot()
    assert shot.examples == 0 and shot.rebuilt == 1  # every statistic back to 0, counted
    _feed(model, monitor, _stream()[:5])
    assert other.snapshot().examples == 5


def test_a_version_or_a_reference_of_its_own_gets_its_own_state(model_path, state_dir):
    model, monitor = _monitor(model_path, state_dir)
    _feed(model, monitor, _stream()[:7])
    strict = monitor_for(model, ShiftSettings(arl=1e9, state_dir=state_dir))
    assert strict.snapshot().examples == 0  # other tests: another file
    assert len(os.listdir(state_dir)) == 2


def test_the_supervisor_names_the_directory_to_the_processes_it_starts():
    before = os.environ.get(SHIFT_STATE_DIR_ENV)
    with shared_state_dir() as folder:
        assert os.path.isdir(folder) and os.environ[SHIFT_STATE_DIR_ENV] == folder
        assert shift_settings(ServeConfig(model="m.onnx")).state_dir == folder
        if os.path.isdir("/dev/shm"):
            assert folder.startswith("/dev/shm/")
    assert not os.path.exists(folder)
    assert os.environ.get(SHIFT_STATE_DIR_ENV) == before
    assert shift_settings(ServeConfig(model="m.onnx")).state_dir == before


def test_a_directory_named_by_whoever_started_the_server_is_used_and_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(SHIFT_STATE_DIR_ENV, str(tmp_path))
    with shared_state_dir() as folder:
        assert folder == str(tmp_path)
    assert tmp_path.is_dir() and os.environ[SHIFT_STATE_DIR_ENV] == str(tmp_path)
