"""The shift monitor's Prometheus series, read from each watched monitor when Prometheus scrapes.

A custom collector rather than gauges set on the request path: a snapshot folds in the examples
kept aside and reads every test, once per scrape, never per call. Series per loaded version
(labels `model`, `version`):

- `foldserve_shift_score{summary}`: per summary (`<group>/<summary>`, e.g. `input/level`,
  `2/pc1`; `classes` for the class-frequency tests), its tests' highest CUSUM statistic over
  its threshold: 1 or more is an alarm, and the summary says what fired;
- `foldserve_shift_alarm_example{summary}`: the example count at which that summary's current
  alarm began (0: not alarming), i.e. since when;
- `foldserve_shift_alarm`: 1 while any test is above its threshold;
- `foldserve_shift_first_alarm_example`: the example count at the monitor's first alarm (0: none);
- `foldserve_shift_examples`: examples the monitor has tested;
- `foldserve_shift_arl_examples`: the stated average run length between false alarms.

With several server processes (`--workers N`, prometheus_client's multiprocess mode) a collector
in a worker is never asked: the supervisor serves what the workers wrote to their files. There
each worker publishes the same series into multiprocess gauges instead, when a version is
watched and every `publish_seconds` after (`SHIFT_PUBLISH_SECONDS`, 0.5 s, passed in by
`core.metrics`), with `multiprocess_mode="livemax"`: each series is the highest value among the
live workers. The workers share one state per version (`core.shift.shared`), so every worker
publishes the same values, at most `publish_seconds` old: an alarm reaches /metrics within a
second. An unloaded version's series are removed from the gauges; until the worker compacts its
files (`foldserve.core.metric_files`) they stay there with their last values, and the supervisor
leaves them out (`foldserve.server.supervise.LoadedVersionsOnly`).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator
from typing import Protocol

from prometheus_client import CollectorRegistry, Gauge
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

LABELS = ("model", "version")
log = logging.getLogger(__name__)


class Snapshot(Protocol):
    summary_names: tuple[str, ...]
    summary_scores: tuple[float, ...]
    summary_since: tuple[int, ...]
    alarm: bool
    first_alarm_example: int
    examples: int
    arl: float


class Watched(Protocol):
    def snapshot(self) -> Snapshot: ...


FAMILIES = {
    "foldserve_shift_score": (
        "Covariate shift of one summary of the traffic (a whitened component, a layer's level, "
        "a residual; 'classes': the class frequencies): its sequential tests' highest CUSUM "
        "statistic over its threshold. 1 or more: that summary alarms.",
        ("summary",),
    ),
    "foldserve_shift_alarm_example": (
        "The example count at which the summary's current alarm began (0: not alarming).",
        ("summary",),
    ),
    "foldserve_shift_alarm": (
        "1 while any of the shift monitor's tests is above its threshold, else 0.",
        (),
    ),
    "foldserve_shift_first_alarm_example": (
        "The example count at the shift monitor's first alarm (0: none yet).",
        (),
    ),
    "foldserve_shift_examples": (
        "Examples the shift monitor has tested (every worker's, when they share it).",
        (),
    ),
    "foldserve_shift_arl_examples": (
        "The shift monitor's stated average run length between false alarms, in examples.",
        (),
    ),
}


class ShiftCollector(Collector):
    """Collects the series of every watched monitor, one per loaded version of every model."""

    def __init__(self, registry: CollectorRegistry, publish_seconds: float = 0.5) -> None:
        self._watched: dict[tuple[str, str], Watched] = {}
        self._lock = threading.Lock()
        self._publisher: _Publisher | None = None
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):  # a worker of several
            self._publisher = _Publisher(self, registry, publish_seconds)
        else:
            registry.register(self)

    def watch(self, labels: tuple[str, str], monitor: Watched) -> None:
        """Export `monitor`'s scores under (model, version) `labels` (replacing any monitor it
        had)."""
        with self._lock:
            self._watched[labels] = monitor
        if self._publisher is not None:
            self._publisher.start()

    def forget(self, labels: tuple[str, str]) -> None:
        """Stop exporting a (model, version)'s series (it was unloaded)."""
        with self._lock:
            self._watched.pop(labels, None)
        if self._publisher is not None:
            self._publisher.forget(labels)

    def samples(self) -> Iterator[tuple[str, tuple[str, ...], float]]:
        """(family, label values, value) for every series of every watched monitor."""
        with self._lock:
            watched = list(self._watched.items())
        for labels, monitor in watched:
            shot = monitor.snapshot()
            summaries = zip(
                shot.summary_names, shot.summary_scores, shot.summary_since, strict=True
            )
            for name, score, since in summaries:
                yield "foldserve_shift_score", (*labels, name), score
                yield "foldserve_shift_alarm_example", (*labels, name), float(since)
            yield "foldserve_shift_alarm", labels, float(shot.alarm)
            yield "foldserve_shift_first_alarm_example", labels, float(shot.first_alarm_example)
            yield "foldserve_shift_examples", labels, float(shot.examples)
            yield "foldserve_shift_arl_examples", labels, float(shot.arl)

    def describe(self) -> list[GaugeMetricFamily]:
        # Registration checks names through describe, without scoring any monitor.
        return [
            GaugeMetricFamily(name, text, labels=[*LABELS, *extra])
            for name, (text, extra) in FAMILIES.items()
        ]

    def collect(self) -> Iterator[GaugeMetricFamily]:
        families = self.describe()
        by_name = {family.name: family for family in families}
        for name, labels, value in self.samples():
            by_name[name].add_metric(list(labels), value)
        yield from families


class _Publisher:
    """A worker's shift series, written to multiprocess gauges on a timer (see the module)."""

    def __init__(
        self, collector: ShiftCollector, registry: CollectorRegistry, seconds: float
    ) -> None:
        self._collector = collector
        self._seconds = seconds
        self._gauges = {
            name: Gauge(
                name, text, [*LABELS, *extra], registry=registry, multiprocess_mode="livemax"
            )
            for name, (text, extra) in FAMILIES.items()
        }
        self._thread: threading.Thread | None = None
        # The label values set, per (model, version): a gauge keeps its children (one series
        # each in the worker's file, read at every scrape) until they are removed by name.
        self._published: dict[tuple[str, str], set[tuple[str, tuple[str, ...]]]] = {}
        self._lock = threading.Lock()  # a publish that read a version never outlives its forget

    def start(self) -> None:
        """Publish now (a version was watched), then every `seconds`."""
        self.publish()
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="shift-publish", daemon=True)
            self._thread.start()

    def publish(self) -> None:
        with self._lock:
            for name, labels, value in self._collector.samples():
                self._gauges[name].labels(*labels).set(value)
                self._published.setdefault(labels[:2], set()).add((name, labels))

    def forget(self, version: tuple[str, str]) -> None:
        """Remove an unloaded version's series from the gauges."""
        with self._lock:
            for name, labels in self._published.pop(version, ()):
                self._gauges[name].remove(*labels)

    def _run(self) -> None:
        while True:
            time.sleep(self._seconds)
            try:
                self.publish()
            except Exception:  # a version unloaded mid-publish: the next round has the rest
                log.exception("publishing the shift series failed")
