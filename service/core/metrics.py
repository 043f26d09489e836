"""Every Prometheus metric of the server, built on an injected `CollectorRegistry`.

With `--workers N` every worker writes its values to prometheus_client's multiprocess files and
the supervisor serves their sum (gauges: as their `multiprocess_mode` says). Names follow the
Prometheus guide (`foldserve_` prefix, base units, `_total`, `_seconds`);
latencies are histograms so replicas aggregate. `Metrics` registers the families once; each
loaded model version gets a `VersionMetrics` view of label children (`model`, `version`), made
when the version is loaded and removed when it is unloaded; calls refused before they named a
served model count under `model=""`, `version=""`. Children are resolved up front or on
first use, so recording a call costs a dict lookup and a few lock-protected additions.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from functools import cached_property

import numpy as np
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)

from foldserve.core.adapt.metrics import AdaptFamilies
from foldserve.core.method_metrics import MethodMetrics
from foldserve.core.shift.metrics import ShiftCollector, Watched
from foldserve.core.shift.settings import SHIFT_PUBLISH_SECONDS

# Fine below a millisecond (one call here is ~0.1-0.5 ms) so p50/p99 read well, up to 5 s.
LATENCY_BUCKETS = (
    25e-6, 50e-6, 75e-6, 100e-6, 150e-6, 200e-6, 300e-6, 400e-6, 500e-6, 750e-6,
    1e-3, 1.5e-3, 2e-3, 3e-3, 5e-3, 7.5e-3, 10e-3, 25e-3, 50e-3, 100e-3, 250e-3, 500e-3,
    1.0, 2.5, 5.0,
)  # fmt: skip

# Every foldserve series of a served version carries the model's name and version.
MODEL_LABELS = ("model", "version")


# The series that says which versions are loaded (1) or were unloaded (0, under --workers).
INFO_METRIC = "foldserve_model_info"


class Metrics:
    """The server's metric families, for every served model.

    Args:
        registry: where every metric registers (tests pass a fresh one).
        methods: RPC methods whose series exist (at zero, code OK) from the start for every
            loaded version, so dashboards see them at once.
        process: also register the process and platform collectors.
    """

    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        methods: Iterable[str] = (),
        process: bool = True,
    ) -> None:
        self.methods = tuple(methods)
        self._registry = registry
        self._register_rpc_families()
        self._register_model_families()
        self._register_repository_families()
        self._register_shift_families()
        self.adapt = AdaptFamilies(registry)
        if process:
            ProcessCollector(registry=registry)
            PlatformCollector(registry=registry)

    def _register_rpc_families(self) -> None:
        labels, registry = MODEL_LABELS, self._registry
        self.requests = Counter(
            "foldserve_requests_total",
            "RPCs finished (PredictStream: stream messages), by method and gRPC status code.",
            (*labels, "method", "code"),
            registry=registry,
        )
        self.duration = Histogram(
            "foldserve_request_duration_seconds",
            "Time in the RPC handler, from start to response (PredictStream: per message).",
            (*labels, "method"),
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.in_flight = Gauge(
            "foldserve_requests_in_flight",
            "RPCs being handled now (an open PredictStream counts while it handles a message).",
            labels,
            registry=registry,
            multiprocess_mode="livesum",
        )

    def _register_model_families(self) -> None:
        labels, registry = MODEL_LABELS, self._registry
        self.compute = Histogram(
            "foldserve_model_compute_duration_seconds",
            "Time in onnxruntime's run, per model run.",
            labels,
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.decode = Histogram(
            "foldserve_request_decode_duration_seconds",
            "Time from the handler starting until model compute starts: decoding and validating "
            "the request.",
            labels,
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.info = Gauge(
            INFO_METRIC,
            "A loaded model version; always 1.",
            (*labels, "sha256", "opset", "foldserve_version"),
            registry=registry,
            multiprocess_mode="livemax",
        )
        self.predictions = Counter(
            "foldserve_predictions_total",
            "Examples classified, by predicted class label.",
            (*labels, "class"),
            registry=registry,
        )

    def _register_repository_families(self) -> None:
        registry = self._registry
        self.reload_failures = Counter(
            "foldserve_model_reload_failures_total",
            "Model versions found in the model repository that could not be loaded.",
            ("model",),
            registry=registry,
        )
        self.versions_loaded = Gauge(
            "foldserve_model_versions_loaded",
            "Model versions loaded and serving.",
            ("model",),
            registry=registry,
            multiprocess_mode="livemax",
        )
        self.versions_refused = Gauge(
            "foldserve_model_versions_refused",
            "Model versions in the repository that are refused (corrupt or invalid); the loaded "
            "versions keep serving. RepositoryIndex and the log say why.",
            ("model",),
            registry=registry,
            multiprocess_mode="livemax",
        )

    def _register_shift_families(self) -> None:
        """The shift monitor's series, read from each version's monitor at scrape time."""
        self.shift = ShiftCollector(self._registry, SHIFT_PUBLISH_SECONDS)

    def for_model(self, model: str) -> ModelSeries:
        """The repository series of one model."""
        return ModelSeries(self, model)

    def for_version(
        self,
        model: str,
        version: str,
        *,
        sha256: str,
        opset: int,
        foldserve_version: str,
        class_labels: Iterable[str],
    ) -> VersionMetrics:
        """The label children of one loaded version (its `foldserve_model_info` set to 1)."""
        info = (sha256, str(opset), foldserve_version)
        return VersionMetrics(self, (model, version), info, class_labels)

    @cached_property
    def unresolved(self) -> VersionMetrics:
        """The series of calls refused before they named a model that is served (model and
        version ""): admission, the token, an unknown model."""
        return VersionMetrics(self, ("", ""), None, ())


class ModelSeries:
    """The repository series of one model: versions loaded and refused, load failures."""

    def __init__(self, families: Metrics, model: str) -> None:
        self._families = families
        self.model = model
        self.reload_failures = families.reload_failures.labels(model)
        self.versions_loaded = families.versions_loaded.labels(model)
        self.versions_refused = families.versions_refused.labels(model)

    def remove(self) -> None:
        """Drop this model's series (it was unloaded)."""
        families = self._families
        self.versions_loaded.set(0)
        for family in (families.reload_failures, families.versions_loaded):
            family.remove(self.model)
        families.versions_refused.remove(self.model)


class VersionMetrics:
    """The series of one loaded model version: what its calls and model runs record."""

    def __init__(
        self,
        families: Metrics,
        labels: tuple[str, str],
        info: tuple[str, str, str] | None,
        classes: Iterable[str],
    ) -> None:
        self.model, self.version = labels
        self._families = families
        self._labels = labels
        self._info = info
        if info is not None:
            families.info.labels(*labels, *info).set(1)
        self.compute = families.compute.labels(*labels)
        self.decode = families.decode.labels(*labels)
        self.in_flight = families.in_flight.labels(*labels)
        self._classes = tuple(classes)
        self._predictions = [families.predictions.labels(*labels, c) for c in self._classes]
        self._methods: dict[str, MethodMetrics] = {}
        self._lock = threading.Lock()
        for method in families.methods:
            self.method(method)

    def method(self, name: str) -> MethodMetrics:
        """The metrics of one RPC method (created on first use)."""
        found = self._methods.get(name)
        if found is None:
            with self._lock:
                found = self._methods.get(name)
                if found is None:
                    families = self._families
                    found = MethodMetrics(
                        families.requests, families.duration, (*self._labels, name)
                    )
                    self._methods[name] = found
        return found

    def count_predictions(self, labels: np.ndarray) -> None:
        """Count predicted class indices (one per example)."""
        if labels.shape[0] == 1:  # the common case, one example per call: skip bincount
            self._predictions[int(labels[0])].inc()
            return
        for index, count in enumerate(np.bincount(labels.ravel())):
            if count:
                self._predictions[index].inc(int(count))

    def watch_shift(self, monitor: Watched) -> None:
        """Export a shift monitor's scores, thresholds and alarm, read when Prometheus scrapes."""
        self._families.shift.watch(self._labels, monitor)

    def remove_info(self) -> None:
        """Drop this file's `foldserve_model_info` series (another file took its version).

        It is set to 0 first: under `--workers` a series lives on in the worker's multiprocess
        file after `remove` (until the file is compacted), and the supervisor shows only versions
        whose info is 1 somewhere.
        """
        if self._info is None:
            return
        info = self._families.info
        info.labels(*self._labels, *self._info).set(0)
        info.remove(*self._labels, *self._info)

    def remove(self) -> None:
        """Drop every series of this version (it was unloaded)."""
        families, labels = self._families, self._labels
        with self._lock:
            for method in self._methods.values():
                method.remove()
            self._methods = {}
        self.remove_info()
        for family in (families.compute, families.decode, families.in_flight):
            family.remove(*labels)
        for label in self._classes:
            families.predictions.remove(*labels, label)
        families.shift.forget(self._labels)
