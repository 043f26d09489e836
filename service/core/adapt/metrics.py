"""The series of adaptation in the server: the reservoirs, the candidates built, and what each
candidate version was adapted on and how it compares with its source on that sample.

Candidate series carry (`model`, `version`: the candidate's); under `--workers` every worker
shows the same candidate, so those gauges take the live workers' highest value, and the
reservoirs (one per worker) their sum.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from foldserve.contract import Adaptation

LABELS = ("model", "version")
BUILD_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)


class AdaptFamilies:
    """The adaptation metric families, on `registry`."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.reservoir_examples = Gauge(
            "foldserve_adapt_reservoir_examples",
            "Recent inputs kept for adaptation (--adapt-reservoir), by model.",
            ("model",),
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.reservoir_bytes = Gauge(
            "foldserve_adapt_reservoir_bytes",
            "Memory the reservoirs of recent inputs take (fixed by --adapt-reservoir).",
            ("model",),
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.builds = Counter(
            "foldserve_adapt_builds_total",
            "Candidate versions built from the reservoir, by trigger (alarm, request) and outcome "
            "(built, failed).",
            ("model", "trigger", "outcome"),
            registry=registry,
        )
        self.build_duration = Histogram(
            "foldserve_adapt_build_duration_seconds",
            "Time to build a candidate: adaptation, checks, new shift reference, writing it.",
            ("model",),
            buckets=BUILD_BUCKETS,
            registry=registry,
        )
        self._register_candidate_families(registry)

    def _register_candidate_families(self, registry: CollectorRegistry) -> None:
        gauge = {"registry": registry, "multiprocess_mode": "livemax"}
        self.candidate_info = Gauge(
            "foldserve_candidate_info",
            "A candidate version (served by version, not the default; promote it with model "
            "control); always 1. source_version: the version it was adapted from.",
            (*LABELS, "source_version"),
            **gauge,
        )
        self.candidate_examples = Gauge(
            "foldserve_candidate_examples",
            "Examples the candidate version was adapted on.",
            LABELS,
            **gauge,
        )
        self.candidate_agreement = Gauge(
            "foldserve_candidate_agreement_ratio",
            "On its adaptation sample, the fraction of examples where the candidate and the "
            "version it was adapted from predict the same class.",
            LABELS,
            **gauge,
        )
        self.candidate_entropy = Gauge(
            "foldserve_candidate_entropy_nats",
            "On its adaptation sample, the mean prediction entropy of the candidate (of=candidate) "
            "and of the version it was adapted from (of=source).",
            (*LABELS, "of"),
            **gauge,
        )

    def show_candidate(self, model: str, version: str, record: Adaptation | None) -> None:
        """A candidate version is served: its series."""
        if record is None:
            return
        labels = (model, version)
        self.candidate_info.labels(*labels, record.source_version).set(1)
        self.candidate_examples.labels(*labels).set(record.examples)
        self.candidate_agreement.labels(*labels).set(record.agreement)
        self.candidate_entropy.labels(*labels, "candidate").set(record.entropy_adapted)
        self.candidate_entropy.labels(*labels, "source").set(record.entropy_source)

    def hide_candidate(self, model: str, version: str, record: Adaptation | None) -> None:
        """A candidate version is no longer served (discarded, replaced, promoted)."""
        if record is None:
            return
        labels = (model, version)
        self.candidate_info.labels(*labels, record.source_version).set(0)
        self.candidate_info.remove(*labels, record.source_version)
        for family in (self.candidate_examples, self.candidate_agreement):
            family.remove(*labels)
        for which in ("candidate", "source"):
            self.candidate_entropy.remove(*labels, which)

    def show_reservoir(self, model: str, examples: int, nbytes: int) -> None:
        self.reservoir_examples.labels(model).set(examples)
        self.reservoir_bytes.labels(model).set(nbytes)
