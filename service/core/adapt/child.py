"""Adaptation in a process of its own, at the lowest CPU priority.

A build fits a new shift reference (hundreds of milliseconds of numpy and Python): in the serving
process it would hold the interpreter lock and one of the cores the event loop needs, and the
calls in flight would wait. So the server hands it to one child process, started once (spawned:
the server's threads and sockets stay behind) and niced to 19, which takes the cores only when
the server leaves them idle. The child reads the model file itself and sends back the adapted
file's bytes and its record.
"""

from __future__ import annotations

import multiprocessing
import os
import tempfile
import threading
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import replace
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from foldserve.contract import Adaptation
from foldserve.core.adapt.adapt import adapt_model
from foldserve.core.errors import RequestError, Status
from foldserve.core.loading import load_model
from foldserve.core.model import ModelError
from foldserve.core.orphans import when_orphaned
from foldserve.core.runner import monitor_for
from foldserve.core.shift.cusum import LatticeKey, known_lattice_thresholds
from foldserve.core.shift.settings import ShiftSettings

Thresholds = dict[LatticeKey, int]
ADAPT_SECONDS = 120.0  # a build on a busy machine; what a model control call waits at most


class AdaptProcess:
    """The child that adapts models (started on first use, or by `start`)."""

    def __init__(self) -> None:
        self._pool: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()

    def start(self) -> None:
        """Start the child now, in the background, so that the first build does not wait."""
        self._executor().submit(_ready)

    def adapt(
        self,
        path: str,
        name: str,
        version: str,
        sample: np.ndarray,
        data: str,
        shift: ShiftSettings,
    ) -> tuple[bytes, Adaptation, Thresholds]:
        """The adapted file's bytes and record (`adapt_model` on the file at `path`), and the
        lattice thresholds its shift monitor needs (`shift`: the server's monitor settings).

        Raises:
            AdaptError: as `adapt_model`.
            RequestError: UNAVAILABLE when the child died or took longer than ADAPT_SECONDS.
        """
        executor = self._executor()
        try:
            future = executor.submit(_adapt_file, path, name, version, sample, data, shift)
            return future.result(ADAPT_SECONDS)
        except (BrokenProcessPool, TimeoutError) as exc:
            with self._lock:
                if self._pool is executor:
                    self._pool = None
            executor.shutdown(wait=False, cancel_futures=True)
            raise RequestError(
                Status.UNAVAILABLE, f"parameters.candidate: the adaptation process failed: {exc!r}"
            ) from None

    def stop(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)

    def _executor(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._pool is None:
                context = multiprocessing.get_context("spawn")
                self._pool = ProcessPoolExecutor(
                    1, context, initializer=_child_start, initargs=(os.getpid(),)
                )
            return self._pool


def _child_start(parent: int) -> None:
    """At the lowest priority, and gone with the server (killed, it cannot stop its child)."""
    os.nice(19)
    when_orphaned(parent, lambda: os._exit(0))
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
    threadpool_limits(1, user_api="blas")


def _ready() -> None:
    """Nothing: unpickling it imported this module and what adaptation needs."""


def _adapt_file(
    path: str, name: str, version: str, sample: np.ndarray, data: str, shift: ShiftSettings
) -> tuple[bytes, Adaptation, Thresholds]:
    model = load_model(path, name, version, monitor=False)
    adapted = adapt_model(model, sample, data)
    return adapted.data, adapted.record, _thresholds(adapted.data, name, shift)


def _thresholds(data: bytes, name: str, shift: ShiftSettings) -> Thresholds:
    """The class tests' thresholds of the adapted model's monitor, worked out here: they are
    dense solves the serving process would otherwise make while it serves."""
    with tempfile.TemporaryDirectory() as folder:
        file = Path(folder) / "model.onnx"
        file.write_bytes(data)
        try:
            model = load_model(file, name, monitor=shift.enabled)
        except ModelError:  # a config.json it needs is the parent's to write; it works them out
            return {}
        monitor_for(model, replace(shift, state_dir=None))
    return known_lattice_thresholds()
