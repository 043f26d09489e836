"""A real Prometheus, with the repository's scrape config and rules, scraping a real server.

Checks what the deployment promises: the request counter counts exactly what was sent (failures
by their gRPC code), every dashboard expression and every rule evaluates and returns data, and a
stopped server makes FoldserveDown pending (its `for:` then keeps it from paging on a blip).
"""

from __future__ import annotations

import math
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.integration.deploy_grpc import Caller, digits_examples, serving
from tests.integration.deploy_prometheus import (
    FOLDSERVE_JOB,
    Prometheus,
    dashboard,
    dashboard_expressions,
    dashboard_variable_queries,
    finite_values,
    metric_selectors,
    prometheus_config_for,
    repository_rules,
    run_prometheus,
    substitute_grafana_variables,
    variable_query_as_promql,
)
from tests.integration.deploy_tools import require_programs, wait_for
from tests.service.subprocess_server import server_process

pytestmark = pytest.mark.integration

MODEL_NAME = "digits-mlp"
SCRAPE_INTERVAL_S = 1


def _sum_by(prometheus: Prometheus, expr: str, labels: tuple[str, ...]) -> Counter:
    rows = prometheus.query(f"sum by ({', '.join(labels)}) ({expr})")
    return Counter(
        {tuple(row["metric"].get(k, "") for k in labels): float(row["value"][1]) for row in rows}
    )


def _wait_for_counts(prometheus: Prometheus, sent: Counter) -> None:
    """Wait until Prometheus has scraped every call counted in `sent`."""
    selector = f'foldserve_requests_total{{model="{MODEL_NAME}"}}'
    total = sum(sent.values())

    def seen() -> bool:
        rows = prometheus.query(f"sum({selector})")
        return bool(rows) and float(rows[0]["value"][1]) == total

    wait_for(seen, timeout=20, what=f"Prometheus to see {total} calls")


def _send(caller: Caller, examples, ok: int, bad: int, infer: int) -> None:
    for i in range(ok):
        assert caller.predict(examples[i % len(examples)]) is not None
    for i in range(bad):  # one feature short: INVALID_ARGUMENT, naming the field
        assert caller.predict(examples[i % len(examples)][:-1]) is None
    for i in range(infer):
        assert caller.model_infer(examples[i % len(examples)])


def _rate_window(since: float) -> str:
    """What the test uses for $__rate_interval and $__range: from before the traffic to now.

    Grafana's $__rate_interval is max(4 x scrape interval, $__interval + scrape interval); with a
    1 s scrape that is 4 s, and traffic sent longer ago than that would read as zero rates (and
    NaN quantiles). The window here covers all the test's traffic, and never less than 4 scrapes.
    """
    return f"{max(4 * SCRAPE_INTERVAL_S, math.ceil(time.time() - since) + 2)}s"


def test_repository_monitoring_against_a_live_server(trained_mlp_dir: Path, tmp_path: Path):
    programs = require_programs("prometheus")
    with server_process(
        trained_mlp_dir / "model.onnx", tmp_path, extra_env={"FOLDSERVE_MODEL_NAME": MODEL_NAME}
    ) as server:
        wait_for(lambda: serving(server.target), timeout=20, what="the server to be SERVING")
        config = prometheus_config_for(
            f"127.0.0.1:{server.metrics_port}", tmp_path / "prometheus", f"{SCRAPE_INTERVAL_S}s"
        )
        with run_prometheus(programs["prometheus"], config, tmp_path / "prometheus") as prom:
            wait_for(
                lambda: [t for t in prom.targets() if t["health"] == "up"],
                timeout=30,
                what="the server's target to be up",
                detail=prom.logs,
            )
            caller = Caller(server.target, MODEL_NAME)
            examples = digits_examples(50)
            try:
                # Two bursts, Prometheus seeing the first before the second, so rate windows
                # ending now hold increases (and quantiles are numbers, not NaN).
                traffic_start = time.time()
                _send(caller, examples, ok=7, bad=2, infer=3)
                _wait_for_counts(prom, caller.sent)
                _send(caller, examples, ok=25, bad=4, infer=6)
                _wait_for_counts(prom, caller.sent)
            finally:
                caller.close()

            _check_counters(prom, caller)
            at = time.time()
            window = _rate_window(traffic_start)
            _check_dashboard(prom, at, window)
            _check_rules(prom, at)

            assert server.terminate() == 0, f"SIGTERM: server did not exit 0\n{server.stderr()}"
            _check_down_alert(prom)


def _check_counters(prom: Prometheus, caller: Caller) -> None:
    selector = f'foldserve_requests_total{{model="{MODEL_NAME}"}}'
    counted = _sum_by(prom, selector, ("method", "code"))
    nonzero = {key: value for key, value in counted.items() if value}
    assert nonzero == dict(caller.sent), "request counter != calls sent, by (method, code)"
    assert caller.sent["Predict", "INVALID_ARGUMENT"] == 6
    predictions = _sum_by(prom, f'foldserve_predictions_total{{model="{MODEL_NAME}"}}', ())
    ok = caller.sent["Predict", "OK"] + caller.sent["ModelInfer", "OK"]
    assert predictions[()] == ok, "foldserve_predictions_total != successful predictions"


def _check_dashboard(prom: Prometheus, at: float, window: str) -> None:
    board = dashboard()
    variables = {
        "model": MODEL_NAME,
        "__rate_interval": window,
        "__range": window,
        "__interval": f"{SCRAPE_INTERVAL_S}s",
        "datasource": "",
    }
    for name, query in dashboard_variable_queries(board):
        promql, label = variable_query_as_promql(query)
        values = {row["metric"].get(label) for row in prom.query(promql, at)}
        assert MODEL_NAME in values or name != "model", f"${name}: {query} gave {values}"
    expressions = dashboard_expressions(board)
    assert len(expressions) >= 10
    empty = []
    for where, expr in expressions:
        promql = substitute_grafana_variables(expr, variables)
        result = prom.query(promql, at)  # raises on a PromQL error
        if not finite_values(result):
            empty.append(f"{where}: {promql} -> {result}")
    assert not empty, "dashboard expressions without data:\n" + "\n".join(empty)


def _check_rules(prom: Prometheus, at: float) -> None:
    ours = repository_rules()
    names = {rule.get("record") or rule.get("alert") for rule in ours}

    def all_evaluated() -> list:
        loaded = prom.rules()
        done = {r["name"] for r in loaded if r.get("lastEvaluation", "").startswith("0001")}
        return loaded if {r["name"] for r in loaded} >= names and not done & names else []

    loaded = wait_for(all_evaluated, timeout=10, what="every rule to be evaluated")
    broken = [f"{r['name']}: {r['health']} {r.get('lastError')}" for r in loaded]
    broken = [b for r, b in zip(loaded, broken, strict=True) if r["health"] != "ok"]
    assert not broken, "rules that fail to evaluate: " + "; ".join(broken)

    empty = []
    for rule in ours:
        name = rule.get("record") or rule.get("alert")
        prom.query(rule["expr"], at)  # evaluates without error
        if "record" in rule:
            for expr in (rule["expr"], rule["record"]):
                if not finite_values(prom.query(expr, at)):
                    empty.append(f"{name}: {expr}")
        else:
            # An alert's condition is empty while it does not fire; what it reads must not be.
            for selector in metric_selectors(rule["expr"]):
                if not prom.query(selector, at):
                    empty.append(f"{name}: {selector}")
    assert not empty, "rules reading no data:\n" + "\n".join(empty)


def _check_down_alert(prom: Prometheus) -> None:
    def down_alert() -> list:
        return [
            a
            for a in prom.alerts()
            if a["labels"].get("alertname") == "FoldserveDown"
            and a["labels"].get("job") == FOLDSERVE_JOB
            and a["state"] in ("pending", "firing")
        ]

    alerts = wait_for(down_alert, timeout=20, what="FoldserveDown to be pending or firing")
    assert alerts[0]["labels"]["severity"] == "page"
