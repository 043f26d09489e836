"""The deployment files, checked by their own tools and against the issue's promises.

docker-compose validates the compose file, promtool the Prometheus config, rules and rule unit
tests, hadolint the Dockerfiles; plain assertions cover what no linter knows (the healthcheck
asks gRPC health, the server waits for the trainer, the dashboard reads every metric, ...).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
import yaml

from foldserve.cli import build_parser
from foldserve.server.config import resolve
from tests.integration.deploy_prometheus import (
    dashboard,
    dashboard_expressions,
    repository_rules,
)
from tests.integration.deploy_tools import (
    COMPOSE_FILE,
    DASHBOARD,
    DEPLOY,
    DOCKERFILES,
    GRPC_PORT,
    HTTP_PORT,
    METRICS_PORT,
    PROMETHEUS_DIR,
    REPO,
    RULES_DIR,
    require_programs,
    run,
    serve_settings,
)

SERVE_DOCKERFILE, TRAIN_DOCKERFILE = DOCKERFILES
METRICS = (
    "foldserve_requests_total",
    "foldserve_request_duration_seconds_bucket",
    "foldserve_model_compute_duration_seconds_bucket",
    "foldserve_request_decode_duration_seconds_bucket",
    "foldserve_requests_in_flight",
    "foldserve_model_info",
    "foldserve_predictions_total",
    "foldserve_shift_score",
    "foldserve_shift_alarm",
)


def compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def compose_env(**extra: str) -> dict[str, str]:
    """The environment without any of the compose file's variables, plus `extra`."""
    prefixes = ("FOLDSERVE_", "PROMETHEUS_", "GRAFANA_", "COMPOSE_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
    env.update(extra)
    return env


# --- tools ------------------------------------------------------------------------------------


@pytest.mark.integration
@pytest.mark.parametrize(
    "extra",
    [
        {},
        {
            "FOLDSERVE_MODEL_STORE": "./models",
            "FOLDSERVE_GRPC_HOST_PORT": "50061",
            "FOLDSERVE_HTTP_HOST_PORT": "8081",
        },
    ],
    ids=["defaults", "host-dir-and-port"],
)
def test_docker_compose_config_accepts_the_file(extra: dict[str, str]):
    programs = require_programs("docker-compose")
    run(
        [programs["docker-compose"], "-f", str(COMPOSE_FILE), "config", "-q"],
        timeout=60,
        env=compose_env(**extra),
        cwd=REPO,
    )


@pytest.mark.integration
def test_the_tls_override_turns_on_tls_everywhere_it_is_needed():
    programs = require_programs("docker-compose")
    tls = REPO / "deploy" / "compose" / "tls.yml"
    done = run(
        [programs["docker-compose"], "-f", str(COMPOSE_FILE), "-f", str(tls), "config"],
        timeout=60, env=compose_env(), cwd=REPO,
    )  # fmt: skip
    merged = yaml.safe_load(done.stdout)["services"]
    server, balancer = merged["server"], merged["balancer"]
    assert server["environment"]["FOLDSERVE_TLS_CLIENT_CA"] == "/certs/ca.crt"
    assert server["environment"]["FOLDSERVE_AUTH_TOKEN_FILE"] == "/certs/token"
    assert "--tls-cert /certs/client.crt" in " ".join(server["healthcheck"]["test"])
    assert balancer["environment"]["BALANCER_TLS"] == "1"
    assert all(
        any(str(v).endswith(":/certs:ro") or "/certs" in str(v) for v in service["volumes"])
        for service in (server, balancer)
    )


@pytest.mark.integration
def test_the_repository_override_serves_a_model_repository_instead_of_a_file():
    programs = require_programs("docker-compose")
    overlay = REPO / "deploy" / "compose" / "repository.yml"
    done = run(
        [programs["docker-compose"], "-f", str(COMPOSE_FILE), "-f", str(overlay), "config"],
        timeout=60, env=compose_env(), cwd=REPO,
    )  # fmt: skip
    environment = yaml.safe_load(done.stdout)["services"]["server"]["environment"]
    variables = {key: "" if value is None else str(value) for key, value in environment.items()}
    config = resolve(build_parser().parse_args(["serve"]), variables)
    assert (config.model, config.model_repository) == (None, "/models/repository")
    assert config.model_control_mode == "none"


@pytest.mark.integration
def test_promtool_check_config_and_rules():
    promtool = require_programs("promtool")["promtool"]
    result = run([promtool, "check", "config", str(PROMETHEUS_DIR / "prometheus.yml")], timeout=60)
    assert "SUCCESS" in result.stdout + result.stderr
    rule_files = sorted(RULES_DIR.glob("*.yml"))
    assert len(rule_files) >= 2
    run([promtool, "check", "rules", *map(str, rule_files)], timeout=60)


@pytest.mark.integration
def test_promtool_rule_unit_tests_pass():
    promtool = require_programs("promtool")["promtool"]
    tests = sorted((PROMETHEUS_DIR / "tests").glob("*.yml"))
    assert tests, "no promtool unit tests in deploy/prometheus/tests/"
    run([promtool, "test", "rules", *map(str, tests)], timeout=120)


def test_every_alert_has_a_firing_and_a_quiet_unit_test():
    alerts = {rule["alert"] for rule in repository_rules() if "alert" in rule}
    assert {"FoldserveDown", "FoldserveHighErrorRatio", "FoldserveHighLatencyP99"} <= alerts
    fires: set[str] = set()
    quiet: set[str] = set()
    for path in (PROMETHEUS_DIR / "tests").glob("*.yml"):
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                (fires if check.get("exp_alerts") else quiet).add(check["alertname"])
    assert alerts <= fires, f"alerts never shown firing: {alerts - fires}"
    assert alerts <= quiet, f"alerts never shown quiet: {alerts - quiet}"


@pytest.mark.integration
@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_passes(dockerfile: Path):
    hadolint = require_programs("hadolint")["hadolint"]
    # No config file, so no rule is ignored; any inline ignore must carry its reason.
    run([hadolint, "--no-color", str(dockerfile)], timeout=60, cwd=REPO)
    for line in dockerfile.read_text().splitlines():
        if "hadolint ignore" in line:
            assert re.search(r"hadolint ignore=\S+\s+\S", line), f"unexplained ignore: {line}"


def test_trainer_entry_script_is_valid_posix_shell():
    run(["sh", "-n", str(DEPLOY / "docker" / "train-once.sh")], timeout=30)


# --- images -----------------------------------------------------------------------------------


def _instructions(dockerfile: Path) -> list[str]:
    text = re.sub(r"\\\n\s*", " ", dockerfile.read_text())
    return [line.strip() for line in text.splitlines() if line.strip() and line[0] != "#"]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_images_take_the_base_image_as_a_build_argument(dockerfile: Path):
    lines = _instructions(dockerfile)
    assert lines[0] == "ARG BASE_IMAGE=python:3.11-slim"
    assert all(line.split()[1] == "${BASE_IMAGE}" for line in lines if line.startswith("FROM"))


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_images_run_as_a_non_root_user(dockerfile: Path):
    users = [line.split()[1] for line in _instructions(dockerfile) if line.startswith("USER")]
    assert users, "no USER"
    assert users[-1].split(":")[0] not in ("0", "root")


def test_serving_image_is_slim_and_checks_grpc_health():
    lines = _instructions(SERVE_DOCKERFILE)
    text = "\n".join(lines)
    assert "[train]" not in text and "torch" not in text.replace("find_spec('torch')", "")
    assert f"EXPOSE {GRPC_PORT} {HTTP_PORT} {METRICS_PORT}" in lines
    (healthcheck,) = [line for line in lines if line.startswith("HEALTHCHECK")]
    assert "foldserve health --target" in healthcheck
    assert "ORT_DISABLE_TELEMETRY=1" in text


def test_dockerignore_keeps_the_context_small_but_complete():
    lines = (REPO / ".dockerignore").read_text().splitlines()
    patterns = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    assert patterns[0] == "*", "allow-list style: everything out first"
    for needed in ("pyproject.toml", "README.md", "service/", "training/", "deploy/docker/"):
        assert f"!{needed}" in patterns


# --- compose ----------------------------------------------------------------------------------


def test_compose_services_and_their_wiring():
    services = compose()["services"]
    assert set(services) == {
        "trainer",
        "server",
        "balancer",
        "prometheus",
        "alertmanager",
        "grafana",
    }
    trainer, server = services["trainer"], services["server"]
    assert trainer["restart"] == "no"
    assert server["depends_on"] == {"trainer": {"condition": "service_completed_successfully"}}
    assert "foldserve health" in " ".join(server["healthcheck"]["test"])
    assert any(":/models" in v for v in trainer["volumes"])
    assert any(v.endswith(":/models:ro") for v in server["volumes"])
    for name in ("MODEL", "MODEL_NAME", "PORT", "METRICS_PORT", "LOG_LEVEL", "GRACE_SECONDS"):
        assert f"FOLDSERVE_{name}" in server["environment"]
    for service in (trainer, server):
        assert "BASE_IMAGE" in service["build"]["args"]
    prometheus = services["prometheus"]
    assert any(v.startswith("./deploy/prometheus:") for v in prometheus["volumes"])
    grafana = services["grafana"]
    assert any(v.startswith("./deploy/grafana/provisioning:") for v in grafana["volumes"])
    assert any(v.startswith("./deploy/grafana/dashboards:") for v in grafana["volumes"])


def test_server_settings_match_the_service_settings():
    known = serve_settings()
    server_env = set(compose()["services"]["server"]["environment"])
    assert server_env <= known, f"unknown settings: {server_env - known}"
    assert known <= server_env, f"settings the compose file does not expose: {known - server_env}"


def test_the_image_and_compose_agree_on_the_ports():
    """gRPC, HTTP/REST and metrics: the image's defaults, what a replica is told, what it exposes
    on the compose network, and the HTTP/REST port published by the balancer, not the replicas."""
    env = dict(re.findall(r"\b(FOLDSERVE_\w+)=(\S+)", "\n".join(_instructions(SERVE_DOCKERFILE))))
    ports = {"FOLDSERVE_PORT": GRPC_PORT, "FOLDSERVE_HTTP_PORT": HTTP_PORT}
    ports["FOLDSERVE_METRICS_PORT"] = METRICS_PORT
    services = compose()["services"]
    server = services["server"]
    for variable, port in ports.items():
        assert env[variable] == str(port), f"the image's {variable}"
        assert server["environment"][variable] == str(port), f"compose's {variable}"
    assert set(server["expose"]) == {str(port) for port in ports.values()}
    published = services["balancer"]["ports"]
    assert any(
        p.endswith(f":{HTTP_PORT}") and "${FOLDSERVE_HTTP_HOST_PORT:-8000}" in p for p in published
    )
    assert all(p.startswith("${FOLDSERVE_BIND_ADDRESS:-127.0.0.1}:") for p in published)


def test_prometheus_loads_the_rule_files_it_is_shipped_with():
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    loaded = {p for pattern in config["rule_files"] for p in PROMETHEUS_DIR.glob(pattern)}
    assert loaded == set(RULES_DIR.glob("*.yml"))
    jobs = {scrape["job_name"]: scrape for scrape in config["scrape_configs"]}
    # Every replica, found by the compose service name, not the balancer in front of them.
    assert jobs["foldserve"]["dns_sd_configs"][0]["names"] == ["server"]
    assert jobs["balancer"]["static_configs"][0]["targets"] == ["balancer:8404"]
    (managers,) = config["alerting"]["alertmanagers"]
    assert managers["static_configs"][0]["targets"] == ["alertmanager:9093"]


# --- grafana ----------------------------------------------------------------------------------


def test_dashboard_covers_the_issue_and_uses_the_provisioned_datasource():
    board = dashboard()
    exprs = " ".join(expr for _, expr in dashboard_expressions(board))
    for metric in METRICS:
        assert metric in exprs, f"dashboard never reads {metric}"
    for quantile in ("0.5", "0.95", "0.99"):
        assert f"histogram_quantile({quantile}," in exprs
    assert "sum by (method, code)" in exprs
    assert "[$__rate_interval]" in exprs and "[5m]" not in exprs
    provisioned = yaml.safe_load(
        (DEPLOY / "grafana" / "provisioning" / "dashboards" / "foldserve.yml").read_text()
    )
    compose_mounts = compose()["services"]["grafana"]["volumes"]
    path = provisioned["providers"][0]["options"]["path"]
    assert f"./deploy/grafana/dashboards:{path}:ro" in compose_mounts
    datasources = yaml.safe_load(
        (DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text()
    )
    assert datasources["datasources"][0]["url"] == "http://prometheus:9090"
    assert json.loads(DASHBOARD.read_text())["uid"] == "foldserve"
