"""A real Prometheus for tests, run with the repository's own config and rules, and its HTTP API.

`prometheus_config_for` is the one place the repository's `deploy/prometheus/prometheus.yml`
changes for a test: the foldserve job's discovery (Docker's DNS name `server`) becomes the test
server's address, the Alertmanager's the test's (or none), the balancer job (a compose name) goes,
and the scrape and evaluation intervals shrink to seconds. Rule files are the
repository's own, reached through a symlink, so a broken rule fails the test.
"""

from __future__ import annotations

import json
import math
import re
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.integration.deploy_tools import (
    DASHBOARD,
    PROMETHEUS_DIR,
    RULES_DIR,
    free_port,
    http_json,
    tail,
    wait_for,
)

FOLDSERVE_JOB = "foldserve"


def prometheus_config_for(
    target: str,
    out_dir: Path,
    interval: str = "1s",
    job: str = FOLDSERVE_JOB,
    alertmanager: str | None = None,
    rules_dir: Path = RULES_DIR,
) -> Path:
    """Write the repository's prometheus.yml, pointed at `target`, into `out_dir`.

    Args:
        target: host:port of the server's /metrics, replacing the job's service discovery.
        out_dir: where prometheus.yml goes; `rules` there links to `rules_dir`.
        interval: the global scrape and evaluation interval for the test.
        alertmanager: host:port replacing the Alertmanager address (None: left as it is).
        rules_dir: the repository's rules, or a test's rewritten copy of them.

    Returns:
        The written config file.
    """
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    config["global"]["scrape_interval"] = interval
    config["global"]["evaluation_interval"] = interval
    jobs = [scrape for scrape in config["scrape_configs"] if scrape["job_name"] == job]
    assert len(jobs) == 1, f"prometheus.yml must have exactly one {job!r} job"
    scrape = jobs[0]
    for key in [k for k in scrape if k.endswith("_sd_configs")]:
        del scrape[key]
    scrape["static_configs"] = [{"targets": [target]}]
    # Names that resolve only inside compose (the balancer job, Alertmanager) would send DNS
    # queries off this machine: the balancer job goes, Alertmanager is the test's or none.
    config["scrape_configs"] = [s for s in config["scrape_configs"] if s["job_name"] != "balancer"]
    if alertmanager is None:
        del config["alerting"]
    else:
        (managers,) = config["alerting"]["alertmanagers"]
        managers["static_configs"] = [{"targets": [alertmanager]}]
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "rules").symlink_to(rules_dir, target_is_directory=True)
    path = out_dir / "prometheus.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


@dataclass
class Prometheus:
    """A running Prometheus and its HTTP API."""

    url: str
    process: subprocess.Popen
    log: Path

    def api(self, endpoint: str, **params: Any) -> Any:
        """GET /api/v1/<endpoint>; returns `data`, raising on an error status."""
        body = http_json(f"{self.url}/api/v1/{endpoint}", params)
        if body.get("status") != "success":
            raise AssertionError(f"/api/v1/{endpoint} {params}: {body}")
        return body["data"]

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        """Instant query; the result as a list of {metric, value} (vector) or one scalar row."""
        params: dict[str, Any] = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        data = self.api("query", **params)
        if data["resultType"] in ("scalar", "string"):
            return [{"metric": {}, "value": data["result"]}]
        assert data["resultType"] == "vector", f"{expr}: unexpected {data['resultType']}"
        return data["result"]

    def targets(self) -> list[dict[str, Any]]:
        return self.api("targets", state="active")["activeTargets"]

    def rules(self) -> list[dict[str, Any]]:
        """Every loaded rule (recording and alerting), with health and lastError."""
        return [rule for group in self.api("rules")["groups"] for rule in group["rules"]]

    def alerts(self) -> list[dict[str, Any]]:
        return self.api("alerts")["alerts"]

    def logs(self) -> str:
        return tail(self.log)


@contextmanager
def run_prometheus(binary: str, config: Path, workdir: Path) -> Iterator[Prometheus]:
    """Start Prometheus on 127.0.0.1 with storage in `workdir`; stop it on exit."""
    port = free_port()
    log = workdir / "prometheus.log"
    command = [
        binary,
        f"--config.file={config}",
        f"--storage.tsdb.path={workdir / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--storage.tsdb.retention.time=1h",
    ]
    with log.open("w") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=sink, stdin=subprocess.DEVNULL)
    prometheus = Prometheus(f"http://127.0.0.1:{port}", process, log)
    try:
        wait_for(_text_ok(f"{prometheus.url}/-/ready", process, log), timeout=30, what="ready")
        yield prometheus
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)


def _text_ok(url: str, process: subprocess.Popen, log: Path):
    import urllib.request

    def probe() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"prometheus exited {process.returncode}:\n{tail(log)}")
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200

    return probe


# --- what the repository's rules and dashboard ask of Prometheus ------------------------------


def repository_rules() -> list[dict[str, Any]]:
    """Every rule of every file in deploy/prometheus/rules/, with the file's name under `file`."""
    rules = []
    for path in sorted(RULES_DIR.glob("*.yml")):
        for group in yaml.safe_load(path.read_text())["groups"]:
            rules += [dict(rule, file=path.name) for rule in group["rules"]]
    return rules


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def dashboard_panels(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, including those nested in collapsed rows."""
    for panel in board.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def dashboard_expressions(board: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, PromQL) of every panel target in the dashboard."""
    found = []
    for panel in dashboard_panels(board):
        for target in panel.get("targets", []):
            if target.get("expr"):
                found.append((f"panel {panel['title']!r} {target['refId']}", target["expr"]))
    return found


def dashboard_variable_queries(board: dict[str, Any]) -> list[tuple[str, str]]:
    """(variable name, query) of every query-type template variable."""
    found = []
    for variable in board.get("templating", {}).get("list", []):
        if variable.get("type") == "query":
            query = variable.get("query")
            if isinstance(query, dict):
                query = query.get("query", "")
            found.append((variable["name"], query or variable.get("definition", "")))
    return found


LABEL_VALUES = re.compile(r"^label_values\(\s*(?:(?P<metric>.+?)\s*,\s*)?(?P<label>\w+)\s*\)$")


def variable_query_as_promql(query: str) -> tuple[str, str]:
    """Grafana's `label_values(selector, label)` as PromQL, and the label it reads."""
    match = LABEL_VALUES.match(query.strip())
    assert match and match["metric"], f"unsupported template variable query {query!r}"
    return f"group by ({match['label']}) ({match['metric']})", match["label"]


def substitute_grafana_variables(expr: str, variables: dict[str, str]) -> str:
    """Replace $name, ${name} and ${name:format} as Grafana would, with the given values."""

    def value(match: re.Match[str]) -> str:
        name = match["braced"] or match["plain"]
        if name not in variables:
            raise AssertionError(f"no test value for Grafana variable ${name} in {expr!r}")
        return variables[name]

    pattern = r"\$\{(?P<braced>\w+)(?::\w+)?\}|\$(?P<plain>\w+)"
    return re.sub(pattern, value, expr)


# Words in PromQL that look like metric names but are not selectors.
_PROMQL_WORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan"}
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_NAME = re.compile(r"(?<![\w:.])([a-zA-Z_:][\w:]*)(?![\w:])(\s*\{(\d+)\})?")


def metric_selectors(expr: str) -> list[str]:
    """The vector selectors (metric name plus label matchers) an expression reads.

    A small scanner, enough for this repository's rules: label matchers are set aside, strings
    and grouping-label lists dropped, and a name followed by `(` is a function, not a metric.
    """
    matchers: list[str] = []

    def set_aside(match: re.Match[str]) -> str:
        matchers.append(match[0])
        return f"{{{len(matchers) - 1}}}"

    masked = re.sub(r"\{[^}]*\}", set_aside, expr)
    masked = _GROUPING.sub(" ", re.sub(r'"[^"]*"', '""', masked))
    masked = re.sub(r"\[[^\]]*\]", "", masked)  # range and subquery windows
    selectors = []
    for match in _NAME.finditer(masked):
        name, braces = match[1], match[2]
        if name.lower() in _PROMQL_WORDS:
            continue
        if not braces and masked[match.end() :].lstrip().startswith("("):
            continue  # a function or aggregation
        selectors.append(name + (matchers[int(match[3])] if braces else ""))
    return list(dict.fromkeys(selectors))


def finite_values(result: list[dict[str, Any]]) -> list[float]:
    """The finite sample values of a query result."""
    values = [float(row["value"][1]) for row in result]
    return [v for v in values if math.isfinite(v)]
