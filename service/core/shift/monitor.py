"""The covariate-shift monitor of one served model version: sequential tests on every example.

Each model run hands the monitor one row per example (`ShiftSource.parts`: the input, the
graph's taps, the class probabilities, laid end to end) and the predicted classes. `observe`
keeps them aside (one row copy under a lock) and every `check_every` examples, or at a snapshot,
folds them in: the summaries' normal scores (`summaries`), each test's increment (`bank`), and
the CUSUMs walked over the batch (`cusum.walk`) under the state's lock. The walk gives every
test's value after every example, so an alarm is placed at the exact example that crossed,
however late the batch is folded. The state is the process's own, or shared by every process
of the server (`shared`): then every process's examples feed the same tests.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence

import numpy as np

from foldserve.contract import ShiftReference
from foldserve.core.shift import snapshot as shots
from foldserve.core.shift.bank import TestBank
from foldserve.core.shift.cusum import walk
from foldserve.core.shift.settings import SHIFT_CHECK_EVERY, SHIFT_PENDING_ROWS, ShiftSettings
from foldserve.core.shift.shared import SharedState, state_name
from foldserve.core.shift.snapshot import ShiftSnapshot
from foldserve.core.shift.state import (
    H_EXAMPLES,
    H_FIRST,
    H_FIRST_CHANGE,
    H_FOLDS,
    H_WRITING,
    LocalState,
    StateView,
)
from foldserve.core.shift.summaries import Summaries

__all__ = ["ShiftMonitor", "ShiftSnapshot"]


class ShiftMonitor:
    """Thread-safe (and, with shared state, process-safe) sequential shift tests of one model
    version. Build it with `foldserve.core.runner.monitor_for`, or directly:

    Args:
        reference: what the tests run against.
        summaries: the reference's summaries over the rows the model's source gives.
        class_labels: the model's, in class-index order.
        settings: the server's (`check_every`, `arl`, `state_dir`).
        identity: what identifies the model version (the model file's hash), naming a shared
            state.
        tap_sides: per group name, which side of a BN it shows (for DescribeModel).
    """

    def __init__(
        self,
        reference: ShiftReference,
        summaries: Summaries,
        class_labels: Sequence[str],
        settings: ShiftSettings | None = None,
        identity: str = "",
        tap_sides: dict[str, str] | None = None,
    ) -> None:
        settings = settings or ShiftSettings()
        self.reference = reference
        self.summaries = summaries
        self.bank = TestBank(reference, summaries.names, class_labels, settings.arl)
        self.statistic = shots.References.of(reference)  # what DescribeModel shows per group
        self.tap_sides = dict(tap_sides or {})
        tests = len(self.bank.names)
        if settings.state_dir:
            name = state_name(identity, repr(reference), repr(self.bank.names), str(self.bank.arl))
            self.state: LocalState | SharedState = SharedState(settings.state_dir, name, tests)
        else:
            self.state = LocalState(tests)
        self._pid = os.getpid()
        self._check_every = max(1, settings.check_every or SHIFT_CHECK_EVERY)
        self._capacity = min(self._check_every, SHIFT_PENDING_ROWS)
        self._kept: list[tuple[np.ndarray, ...]] = []  # each run's rows (or parts), not yet folded
        self._kept_labels: list[np.ndarray] = []
        self._pending = 0
        self._lock = threading.Lock()  # the rows kept aside, and the order batches fold in

    @property
    def shared(self) -> bool:
        """True when every process of the server feeds this monitor's state."""
        return self.state.shared

    def observe(self, rows: np.ndarray | Sequence[np.ndarray], labels: np.ndarray) -> None:
        """Take one model run in: one row per example (`[N, width]`, or its sources' parts laid
        end to end, `ShiftSource.parts`) and each example's class (`[N]`).

        The arrays are kept, not copied, until the next fold: the caller must not write to them
        afterwards (a model run's outputs and a request's input are fresh for each call).
        """
        count = labels.shape[0]
        if count == 0:
            return
        parts = (rows,) if isinstance(rows, np.ndarray) else tuple(rows)
        with self._lock:
            self._kept.append(parts)
            self._kept_labels.append(labels)
            self._pending += count
            if self._pending >= self._capacity:
                self._fold_pending()

    def flush(self) -> None:
        """Fold in what this process kept aside (a snapshot does; so does the publisher)."""
        with self._lock:
            self._fold_pending()

    def _fold_pending(self) -> None:
        if not self._pending:
            return
        kept, labels = self._kept, self._kept_labels
        self._kept, self._kept_labels, self._pending = [], [], 0
        split = [self.summaries.parts(k[0] if len(k) == 1 else k) for k in kept]
        parts = tuple(np.concatenate(column) for column in zip(*split, strict=True))
        self._fold(parts, np.concatenate(labels))

    def _fold(self, rows: tuple[np.ndarray, ...], labels: np.ndarray) -> None:
        increments = self.bank.increments(self.summaries(rows), labels)
        with self.state.locked() as view:
            view.header[H_WRITING] = 1.0
            _advance(view, increments, self.bank)
            view.count(self._pid, len(labels))
            view.header[H_WRITING] = 0.0

    def snapshot(self) -> ShiftSnapshot:
        """Every test now, and the first alarm (after folding in what this process kept)."""
        with self._lock:
            self._fold_pending()
            with self.state.locked() as view:
                copy = StateView.of(view.values.copy(), len(self.bank.names))
        return shots.of(self, copy)

    def close(self) -> None:
        """Release the state (a shared one stays for the other processes)."""
        self.flush()
        self.state.close()


def _advance(view: StateView, increments: np.ndarray, bank: TestBank) -> None:
    """Walk every test over a batch (`increments` `[T, B]`) and update its bookkeeping."""
    before = view.header[H_EXAMPLES]
    batch = increments.shape[1]
    values = walk(view.statistic, increments, bank.caps)
    counts = before + 1.0 + np.arange(batch)  # the example count after each example
    last_zero = _last(values <= 0.0)  # where each test last stood at 0
    view.zero_at[:] = np.where(last_zero >= 0, counts[last_zero], view.zero_at)
    above = values > bank.thresholds[:, None]
    if above.any() or view.alarm_at.any():
        if not view.header[H_FIRST] and above.any():
            _first_alarm(view, values, above, counts)
        # The current alarm began after the last example that was not above its threshold.
        last_below = _last(~above)
        began = np.where(last_below >= 0, counts[np.minimum(last_below + 1, batch - 1)], 0.0)
        continuing = (last_below < 0) & (view.alarm_at > 0)
        began = np.where(continuing | (last_below < 0), view.alarm_at, began)
        began[(began == 0) & above[:, -1]] = before + 1.0
        view.alarm_at[:] = np.where(above[:, -1], began, 0.0)
    highest = values.max(axis=1)
    highest /= bank.thresholds
    np.maximum(view.peak, highest, out=view.peak)
    view.statistic[:] = values[:, -1]
    view.header[H_EXAMPLES] = before + batch
    view.header[H_FOLDS] += 1


def _last(mask: np.ndarray) -> np.ndarray:
    """Per row of `mask` ([T, B]), the index of its last True (−1: none)."""
    width = mask.shape[1]
    last = width - 1 - mask[:, ::-1].argmax(axis=1)
    return np.where(mask.any(axis=1), last, -1)


def _first_alarm(
    view: StateView, values: np.ndarray, above: np.ndarray, counts: np.ndarray
) -> None:
    """Record the monitor's first alarm: the example, the tests above then, and for each the
    change it estimates (the example after it last stood at 0)."""
    column = int(np.flatnonzero(above.any(axis=0))[0])
    fired = np.flatnonzero(above[:, column])
    view.header[H_FIRST] = counts[column]
    zeros = _last(values[fired, : column + 1] <= 0.0)
    last = np.where(zeros >= 0, counts[np.maximum(zeros, 0)], view.zero_at[fired])
    view.first[fired] = 1.0
    view.first_change[fired] = last + 1.0
    view.header[H_FIRST_CHANGE] = float((last + 1.0).min())
