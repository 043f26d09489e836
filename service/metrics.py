"""Every Prometheus metric of the server, built on an injected `CollectorRegistry`.

Names follow the Prometheus guide (`foldserve_` prefix, base units, `_total`, `_seconds`);
latencies are histograms so replicas aggregate. Label children are resolved once, up front or on
first use, so recording a call costs a dict lookup and a few lock-protected additions.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable

import numpy as np
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    start_http_server,
)

from service.defaults import SHIFT_HALF_LIFE

# Fine below a millisecond (one call here is ~0.1-0.5 ms) so p50/p99 read well, up to 5 s.
LATENCY_BUCKETS = (
    25e-6, 50e-6, 75e-6, 100e-6, 150e-6, 200e-6, 300e-6, 400e-6, 500e-6, 750e-6,
    1e-3, 1.5e-3, 2e-3, 3e-3, 5e-3, 7.5e-3, 10e-3, 25e-3, 50e-3, 100e-3, 250e-3, 500e-3,
    1.0, 2.5, 5.0,
)  # fmt: skip


# Every foldserve series carries the served model's name and version.
MODEL_LABELS = ("model", "version")


class MethodMetrics:
    """The request counter and duration histogram children of one RPC method."""

    __slots__ = ("_codes", "_counter", "_labels", "_lock", "duration")

    def __init__(self, counter: Counter, duration: Histogram, labels: tuple[str, str, str]):
        self._counter = counter
        self._labels = labels
        self._lock = threading.Lock()
        self._codes = {"OK": counter.labels(*labels, "OK")}
        self.duration = duration.labels(*labels)

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


class Metrics:
    """The server's metrics for one served model.

    Args:
        registry: where every metric registers (tests pass a fresh one).
        model: served model name; version: model version (labels of every series).
        sha256, opset, foldserve_version: labels of `foldserve_model_info`.
        class_labels: the model's classes, for `foldserve_predictions_total`.
        methods: RPC methods whose series exist (at zero, code OK) from the start, so dashboards
            see them at once.
        process: also register the process and platform collectors.
    """

    def __init__(
        self,
        registry: CollectorRegistry,
        model: str,
        version: str,
        *,
        sha256: str,
        opset: int,
        foldserve_version: str,
        class_labels: Iterable[str],
        methods: Iterable[str] = (),
        process: bool = True,
    ) -> None:
        self._model_labels = (model, version)
        self._registry = registry
        self._methods: dict[str, MethodMetrics] = {}
        self._lock = threading.Lock()
        self._register_rpc_metrics()
        self._register_model_metrics(sha256, opset, foldserve_version, class_labels)
        for method in methods:
            self.method(method)
        if process:
            ProcessCollector(registry=registry)
            PlatformCollector(registry=registry)

    def _register_rpc_metrics(self) -> None:
        labels, registry = MODEL_LABELS, self._registry
        self._requests = Counter(
            "foldserve_requests_total",
            "RPCs finished (PredictStream: stream messages), by method and gRPC status code.",
            (*labels, "method", "code"),
            registry=registry,
        )
        self._duration = Histogram(
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
        ).labels(*self._model_labels)

    def _register_model_metrics(
        self, sha256: str, opset: int, foldserve_version: str, class_labels: Iterable[str]
    ) -> None:
        labels, registry, model = MODEL_LABELS, self._registry, self._model_labels
        self.compute = Histogram(
            "foldserve_model_compute_duration_seconds",
            "Time in onnxruntime's run, per model run.",
            labels,
            buckets=LATENCY_BUCKETS,
            registry=registry,
        ).labels(*model)
        self.decode = Histogram(
            "foldserve_request_decode_duration_seconds",
            "Time from the handler starting until model compute starts: decoding and validating "
            "the request.",
            labels,
            buckets=LATENCY_BUCKETS,
            registry=registry,
        ).labels(*model)
        Gauge(
            "foldserve_model_info",
            "The served model; always 1.",
            (*labels, "sha256", "opset", "foldserve_version"),
            registry=registry,
        ).labels(*model, sha256, str(opset), foldserve_version).set(1)
        predictions = Counter(
            "foldserve_predictions_total",
            "Examples classified, by predicted class label.",
            (*labels, "class"),
            registry=registry,
        )
        self._predictions = [predictions.labels(*model, c) for c in class_labels]

    def method(self, name: str) -> MethodMetrics:
        """The metrics of one RPC method (created on first use)."""
        found = self._methods.get(name)
        if found is None:
            with self._lock:
                found = self._methods.get(name)
                if found is None:
                    found = MethodMetrics(
                        self._requests, self._duration, (*self._model_labels, name)
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

    def watch_input_shift(self, score: Callable[[], float]) -> None:
        """Export the input shift monitor's score, computed when Prometheus scrapes."""
        Gauge(
            "foldserve_input_shift_score",
            "How far live inputs drifted from the training data: mean over input channels of "
            "|live mean - training mean| / training std (each clipped at 10), over an "
            f"exponentially weighted window of recent examples (half-life {SHIFT_HALF_LIFE}).",
            MODEL_LABELS,
            registry=self._registry,
        ).labels(*self._model_labels).set_function(score)


def serve_metrics(registry: CollectorRegistry, host: str, port: int) -> tuple[object, int]:
    """Serve `/metrics` over HTTP in a daemon thread.

    Returns:
        (server, port): the HTTP server (call `shutdown()` to stop) and the bound port.

    Raises:
        OSError: the port cannot be bound (e.g. in use).
    """
    server, _thread = start_http_server(port, addr=host, registry=registry)
    return server, int(server.server_port)
