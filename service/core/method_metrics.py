"""The request counter and duration children of one RPC method of one served version."""

from __future__ import annotations

import threading

from prometheus_client import Counter, Histogram


class MethodMetrics:
    """The request counter and duration histogram children of one RPC method of one version."""

    __slots__ = ("_codes", "_counter", "_durations", "_labels", "_lock", "duration")

    def __init__(self, counter: Counter, durations: Histogram, labels: tuple[str, str, str]):
        self._counter = counter
        self._durations = durations
        self._labels = labels
        self._lock = threading.Lock()
        self._codes = {"OK": counter.labels(*labels, "OK")}
        self.duration = durations.labels(*labels)

    def record(self, code: str, seconds: float) -> None:
        """Count one finished call with its status code name and observe its duration."""
        self.count(code)
        self.duration.observe(seconds)

    def count(self, code: str) -> None:
        """Count one call (or one stream message) with its status code name."""
        child = self._codes.get(code)
        if child is None:
            with self._lock:
                child = self._codes.setdefault(code, self._counter.labels(*self._labels, code))
        child.inc()

    def remove(self) -> None:
        """Drop this method's series (its version was unloaded)."""
        with self._lock:
            for code in self._codes:
                self._counter.remove(*self._labels, code)
            self._codes = {}
        self._durations.remove(*self._labels)
