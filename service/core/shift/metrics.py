"""The shift monitor's Prometheus series, read from each watched monitor when Prometheus scrapes.

A custom collector rather than gauges set on the request path: scoring the live state costs more
than the request's own update, so it happens once per scrape (and at the monitor's own checks),
never per call for the metrics' sake. Series per loaded version (labels `model`, `version`):

- `foldserve_shift_score{layer}` and `foldserve_shift_threshold{layer}`: each tapped BN layer's
  statistic and `<layer>/sentinel` for the units the Gaussian statistic leaves out;
- `foldserve_shift_prior_score` and `foldserve_shift_prior_threshold`: predicted-class mix
  against the training priors (Jensen-Shannon divergence, bits);
- `foldserve_shift_alarm`: 1 while any score is above its threshold.

With several server processes (`--workers N`, prometheus_client's multiprocess mode) a collector
in a worker is never asked: the supervisor serves what the workers wrote to their files. There
each worker publishes the same series into multiprocess gauges instead, when a version is
watched and every `publish_seconds` after (`SHIFT_PUBLISH_SECONDS`, passed in by
`core.metrics`), with `multiprocess_mode="livemax"`: each series is the highest value among
the live workers. Every worker watches only the calls it answered (its own monitor; the kernel
spreads connections over them), so with N workers a score reads "the most shifted worker's
traffic", an alarm "some worker's traffic is shifted", a threshold is the model's; values are
at most `publish_seconds` old. An unloaded version's series stay in the files with their last
values; the supervisor leaves them out (`foldserve.server.supervise.LoadedVersionsOnly`).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from typing import Protocol

from prometheus_client import CollectorRegistry, Gauge
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

LABELS = ("model", "version")


class Snapshot(Protocol):
    names: tuple[str, ...]
    scores: tuple[float, ...]
    thresholds: tuple[float, ...]
    prior_score: float
    prior_threshold: float
    alarm: bool


class Watched(Protocol):
    def snapshot(self) -> Snapshot: ...


FAMILIES = {
    "foldserve_shift_score": (
        "Covariate shift of one tapped BN layer's pre-activations: mean over its units of "
        "|m - mean| / std + |log(live std / std)| over recent examples; layer '<bn>/sentinel': "
        "units too constant in training for that, largest recent mean shift.",
        ("layer",),
    ),
    "foldserve_shift_threshold": (
        "The calibrated alarm threshold of foldserve_shift_score: a margin times its maximum "
        "over a clean replay of held-out data at export.",
        ("layer",),
    ),
    "foldserve_shift_prior_score": (
        "Shift of the predicted-class mix: Jensen-Shannon divergence (bits) between recent "
        "predictions and the training class priors.",
        (),
    ),
    "foldserve_shift_prior_threshold": (
        "The calibrated alarm threshold of foldserve_shift_prior_score.",
        (),
    ),
    "foldserve_shift_alarm": (
        "1 while any shift score is above its threshold, else 0.",
        (),
    ),
}


class ShiftCollector(Collector):
    """Collects the series of every watched monitor, one per loaded version of every model."""

    def __init__(self, registry: CollectorRegistry, publish_seconds: float = 5.0) -> None:
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

    def samples(self) -> Iterator[tuple[str, tuple[str, ...], float]]:
        """(family, label values, value) for every series of every watched monitor."""
        with self._lock:
            watched = list(self._watched.items())
        for labels, monitor in watched:
            shot = monitor.snapshot()
            for name, score, limit in zip(shot.names, shot.scores, shot.thresholds, strict=True):
                yield "foldserve_shift_score", (*labels, name), score
                yield "foldserve_shift_threshold", (*labels, name), limit
            yield "foldserve_shift_prior_score", labels, shot.prior_score
            yield "foldserve_shift_prior_threshold", labels, shot.prior_threshold
            yield "foldserve_shift_alarm", labels, float(shot.alarm)

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

    def start(self) -> None:
        """Publish now (a version was watched), then every `seconds`."""
        self.publish()
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="shift-publish", daemon=True)
            self._thread.start()

    def publish(self) -> None:
        for name, labels, value in self._collector.samples():
            self._gauges[name].labels(*labels).set(value)

    def _run(self) -> None:
        while True:
            time.sleep(self._seconds)
            self.publish()
