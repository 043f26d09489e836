"""The metrics page: every metric family the server registers, read from a registry that the
server's own `Metrics` filled (one model version, one method, one watched shift monitor)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml
from prometheus_client import CollectorRegistry

from foldserve.core.metrics import LATENCY_BUCKETS, MODEL_LABELS, Metrics
from foldserve.server.credentials import TLS, TOKEN, CredentialMetrics

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "deploy" / "prometheus" / "rules"

# What a reader needs beside a family's help text; a note for a family that no longer exists
# fails the generator, so a renamed metric cannot keep a stale note.
NOTES = {
    "foldserve_requests_total": (
        "`method` is the gRPC method name (`Predict`, `PredictStream`, `DescribeModel`, "
        "`ModelInfer`, `ModelMetadata`, `ModelReady`, `ServerLive`, `ServerReady`, "
        "`ServerMetadata`, `RepositoryIndex`, ...); a REST call counts under the name of the "
        "gRPC method it is the twin of, and a method no service has under `unknown`. `code` is "
        "the gRPC status name (`OK`, `INVALID_ARGUMENT`, `NOT_FOUND`, `RESOURCE_EXHAUSTED`, "
        "`UNAUTHENTICATED`, `UNAVAILABLE`, ...). Calls refused before a handler runs count too: "
        "over the concurrency bound, oversized, bytes that do not parse, unknown methods. Health "
        "and reflection calls are not counted."
    ),
    "foldserve_model_compute_duration_seconds": (
        "One observation per model run: a `Predict`, a stream message, a `ModelInfer` batch."
    ),
    "foldserve_model_info": (
        "`sha256` is the model file's SHA-256, `opset` its default-domain ONNX opset, "
        "`foldserve_version` the foldserve that wrote it. Under `--workers` an unloaded "
        "version's series turns 0 and the supervisor leaves out every series of a version no "
        "live worker has loaded."
    ),
    "foldserve_model_versions_refused": "Alert: `FoldserveModelVersionRefused`.",
    "foldserve_model_reload_failures_total": "Alert: `FoldserveModelVersionRefused`.",
    "foldserve_shift_score": (
        "`summary` names a summary of the traffic: `input/level`, `input/pc1`, a tapped layer's "
        "`LAYER/level`, `probabilities/pc1`, `classes`... "
        "([the shift monitor guide](../guides/shift-monitor.md))."
    ),
    "foldserve_shift_alarm_example": (
        "Alerts: `FoldserveCovariateShift` (any summary but `classes`), `FoldservePriorShift` "
        "(`classes`)."
    ),
    "foldserve_credentials_reloads_total": (
        "Present when TLS or a token file is set. Under `--workers` every worker loads the files "
        "itself, so one rotation counts once per worker "
        "([rotating certificates and tokens](../guides/security.md))."
    ),
}


@dataclass(frozen=True)
class _Snapshot:
    """What a shift monitor reports (the fields its collector reads), for one summary."""

    summary_names: tuple[str, ...] = ("input/level",)
    summary_scores: tuple[float, ...] = (0.0,)
    summary_since: tuple[int, ...] = (0,)
    alarm: bool = False
    first_alarm_example: int = 0
    examples: int = 0
    arl: float = 1e6


class _Monitor:
    def snapshot(self) -> _Snapshot:
        return _Snapshot()


def families() -> list[tuple[str, str, str, tuple[str, ...]]]:
    """(name as scraped, type, help, labels) of every foldserve family, in registration order."""
    registry = CollectorRegistry()
    metrics = Metrics(registry, methods=("Predict",), process=False)
    metrics.for_model("m")
    version = metrics.for_version(
        "m", "1", sha256="0", opset=17, foldserve_version="0", class_labels=("a",)
    )
    version.watch_shift(_Monitor())
    credentials = CredentialMetrics(registry)
    for kind in (TLS, TOKEN):
        credentials.watch(kind)
    found = []
    for family in registry.collect():
        labels: list[str] = []
        for sample in family.samples:
            labels += [k for k in sample.labels if k not in labels and k != "le"]
        name = family.name + ("_total" if family.type == "counter" else "")
        found.append((name, family.type, family.documentation, tuple(labels)))
    return found


def _labels(labels: tuple[str, ...]) -> str:
    own = [f"`{label}`" for label in labels if label not in MODEL_LABELS]
    base = [f"`{label}`" for label in MODEL_LABELS if label in labels]
    return ", ".join(base + own) or "none"


INTRO = """# Metrics

Generated from the metric families the server registers (`foldserve.core.metrics`,
`foldserve.core.shift.metrics` and `foldserve.server.credentials`), by
`python docs/reference_pages.py`. `foldserve serve` serves
them as Prometheus text on `http://HOST:METRICS_PORT/metrics` (`--metrics-port`, default 9100).

Every series of a served version carries `model` (the served name) and `version`; the
repository series carry `model` only. Calls refused before they named a served model (the
admission bound, a missing token, an unknown model) count under `model=""`, `version=""`.
Beside these, prometheus_client's own `process_*` (CPU, memory, file descriptors, start time) and
`python_info`.

Latency histograms have the buckets {buckets} seconds: ten below a millisecond, so p50 and p99 of
a sub-millisecond call read well, e.g. the p99 of `Predict`:

```promql
histogram_quantile(0.99,
  sum by (le) (rate(foldserve_request_duration_seconds_bucket{{method="Predict"}}[5m])))
```

With `--workers N` the supervisor serves what the workers write to prometheus_client's
multiprocess files: counters and histograms are summed over the workers, and so is
`foldserve_requests_in_flight`. The gauges of versions and shift scores are the highest value
among the live workers (each worker's shift monitor sees only the calls it answered, so a score
reads "the most shifted worker's traffic"; shift values are up to 5 s old).
"""


def metrics_page() -> str:
    """docs/reference/metrics.md."""
    buckets = ", ".join(f"{b:g}" for b in LATENCY_BUCKETS)
    parts = [INTRO.format(buckets=buckets)]
    parts.append("| metric | type | labels |\n| --- | --- | --- |")
    rows = families()
    for name, kind, _, labels in rows:
        parts[-1] += f"\n| [`{name}`](#{name}) | {kind} | {_labels(labels)} |"
    parts[-1] += "\n"
    unknown = set(NOTES) - {name for name, *_ in rows}
    assert not unknown, f"docs/refgen/metrics.py: NOTES for metrics that do not exist: {unknown}"
    for name, kind, text, labels in rows:
        note = f"\n\n{NOTES[name]}" if name in NOTES else ""
        parts.append(f"## {name}\n\n{kind}; labels {_labels(labels)}.\n\n{text}{note}\n")
    parts.append(_rules())
    return "\n".join(parts)


def _rules() -> str:
    """The alert and recording rules of deploy/prometheus/rules/, as Prometheus loads them."""
    alerts = ["| alert | fires when | for | severity |", "| --- | --- | --- | --- |"]
    records = ["| recording rule | expression |", "| --- | --- |"]
    for path in sorted(RULES.glob("*.yml")):
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                expr = " ".join(rule["expr"].split())  # a code span may hold a pipe
                if "alert" in rule:
                    severity = rule.get("labels", {}).get("severity", "")
                    alerts.append(
                        f"| `{rule['alert']}` | `{expr}` | {rule.get('for', '0s')} | {severity} |"
                    )
                else:
                    records.append(f"| `{rule['record']}` | `{expr}` |")
    return (
        "## Alerts and recording rules\n\n"
        "Prometheus's rules in `deploy/prometheus/rules/` (unit-tested with `promtool test "
        "rules deploy/prometheus/tests/*.yml`); where the alerts go: "
        "[Deployment](../guides/deployment.md#where-alerts-go).\n\n"
        + "\n".join(alerts)
        + "\n\n"
        + "\n".join(records)
        + "\n"
    )
