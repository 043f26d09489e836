"""The monitor's state: every test's CUSUM and its bookkeeping in one float64 vector.

One vector, so that it can live in a process's memory (`LocalState`) or in memory that the
processes of one server share (`foldserve.core.shift.shared.SharedState`), and be updated the same
way under either's lock. Layout: a header, then per test (T of them) its statistic, the example
count when it last stood at 0, when its current alarm began (0: none), its highest
statistic/threshold, whether it fired at the monitor's first alarm and the change it estimated
then; then the examples each contributing process folded in (`SLOTS` of them, by pid).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

MAGIC = 20_250_601.0  # the layout's version: a state written by another layout is rebuilt
HEADER = 8
SLOTS = 16  # processes whose contributions are counted (pid, examples)
# Header entries.
H_MAGIC, H_TESTS, H_EXAMPLES, H_FIRST, H_FIRST_CHANGE, H_WRITING, H_REBUILT, H_FOLDS = range(8)
FIELDS = ("statistic", "zero_at", "alarm_at", "peak", "first", "first_change")


def state_size(tests: int) -> int:
    """Float64 values in the state of `tests` tests."""
    return HEADER + len(FIELDS) * tests + 2 * SLOTS


@dataclass
class StateView:
    """Named views into a state vector (they write through)."""

    values: np.ndarray
    header: np.ndarray
    statistic: np.ndarray
    zero_at: np.ndarray
    alarm_at: np.ndarray
    peak: np.ndarray
    first: np.ndarray
    first_change: np.ndarray
    slots: np.ndarray  # [SLOTS, 2]: pid, examples

    @classmethod
    def of(cls, values: np.ndarray, tests: int) -> StateView:
        parts = {}
        offset = HEADER
        for name in FIELDS:
            parts[name] = values[offset : offset + tests]
            offset += tests
        slots = values[offset : offset + 2 * SLOTS].reshape(SLOTS, 2)
        return cls(values, values[:HEADER], slots=slots, **parts)

    def valid(self, tests: int) -> bool:
        """Written with this layout for `tests` tests, and not left half written."""
        header = self.header
        return header[H_MAGIC] == MAGIC and header[H_TESTS] == tests and header[H_WRITING] == 0

    def reset(self, tests: int) -> None:
        """A fresh state: no examples, every statistic at 0 (the rebuild count is kept)."""
        rebuilt = self.header[H_REBUILT] + (1 if self.header[H_MAGIC] == MAGIC else 0)
        for name in FIELDS:
            getattr(self, name)[:] = 0.0
        self.slots[:] = 0.0
        self.header[:] = 0.0
        self.header[H_TESTS], self.header[H_REBUILT] = tests, rebuilt
        self.header[H_MAGIC] = MAGIC

    def count(self, pid: int, examples: int) -> None:
        """Credit `examples` to process `pid` (the least active slot is reused when full)."""
        pids = self.slots[:, 0]
        found = np.flatnonzero(pids == pid)
        slot = int(found[0]) if found.size else int(np.argmin(self.slots[:, 1]))
        if not found.size:
            self.slots[slot] = (pid, 0.0)
        self.slots[slot, 1] += examples


class LocalState:
    """The state of a monitor that one process keeps to itself."""

    shared = False
    where = "this process's memory"

    def __init__(self, tests: int) -> None:
        self.tests = tests
        self._values = np.zeros(state_size(tests))
        self.view = StateView.of(self._values, tests)
        self.view.reset(tests)
        self._lock = threading.Lock()

    @contextmanager
    def locked(self) -> Iterator[StateView]:
        with self._lock:
            yield self.view

    def close(self) -> None:
        """Nothing to release."""
