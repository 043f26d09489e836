"""The balancer's config and its wiring into the compose stack, checked without running them."""

from __future__ import annotations

import re

import pytest
import yaml

from tests.integration.deploy_balancer import (
    HAPROXY_CONFIG,
    health_check_request,
    health_reply_data_frame,
)
from tests.integration.deploy_tools import COMPOSE_FILE, require_programs, run

CONFIG = HAPROXY_CONFIG.read_text()


def _seconds(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(ms|s)?", text)
    assert match, text
    return float(match[1]) / (1000 if match[2] == "ms" else 1)


def _default_server() -> dict[str, str]:
    # The check timings; the TLS block adds a second line with only TLS settings.
    (line,) = [
        line
        for line in re.findall(r"^\s*default-server (.+)$", CONFIG, re.MULTILINE)
        if " check " in f" {line} "
    ]
    words = line.split()
    return {
        w: words[i + 1] for i, w in enumerate(words[:-1]) if w in {"inter", "fastinter", "fall"}
    }


@pytest.mark.integration
def test_haproxy_accepts_the_config():
    haproxy = require_programs("haproxy")["haproxy"]
    result = run([haproxy, "-c", "-f", str(HAPROXY_CONFIG)], timeout=60)
    assert "Configuration file is valid" in result.stdout + result.stderr
    assert "WARNING" not in result.stdout + result.stderr


def test_the_health_check_is_grpc_health_check_in_http2_bytes():
    (sent,) = re.findall(r"tcp-check send-binary ([0-9a-f]+)", CONFIG)
    assert bytes.fromhex(sent) == health_check_request()
    (serving,) = re.findall(r"tcp-check expect min-recv 0 binary ([0-9a-f]+)", CONFIG)
    assert bytes.fromhex(serving) == health_reply_data_frame(1)
    assert "h2" in re.findall(r"^\s*default-server (.+)$", CONFIG, re.MULTILINE)[0].split()


def test_calls_are_balanced_per_http2_stream_and_retried_elsewhere():
    assert re.search(r"^\s*mode http$", CONFIG, re.MULTILINE), "L7, not a TCP pass-through"
    assert re.search(r"^\s*bind :50051 proto h2$", CONFIG, re.MULTILINE)
    assert re.search(r"^\s*retry-on conn-failure empty-response$", CONFIG, re.MULTILINE)
    assert re.search(r"^\s*option redispatch 1$", CONFIG, re.MULTILINE)
    assert re.search(r"server-template replica 1-\d+ server:50051 resolvers docker", CONFIG)


def _server_environment() -> dict[str, str]:
    compose = yaml.safe_load(COMPOSE_FILE.read_text())
    return compose["services"]["server"]["environment"]


def _compose_default(variable: str) -> str:
    (value,) = re.findall(rf"\$\{{{variable}:-([^}}]+)\}}", COMPOSE_FILE.read_text())
    return value


def test_the_drain_delay_outlasts_the_balancers_detection():
    """From SIGTERM the replica says NOT_SERVING; HAProxy's next check may come `inter` later,
    then `fall - 1` more `fastinter` apart, each taking up to `timeout check`."""
    server = _default_server()
    (check_timeout,) = re.findall(r"^\s*timeout check (\S+)$", CONFIG, re.MULTILINE)
    fall = int(server["fall"])
    worst = _seconds(server["inter"]) + (fall - 1) * _seconds(server["fastinter"])
    worst += fall * _seconds(check_timeout)
    delay = float(_compose_default("FOLDSERVE_DRAIN_DELAY_SECONDS"))
    assert delay >= 1.5 * worst, f"drain delay {delay} s vs detection up to {worst} s"
    compose = yaml.safe_load(COMPOSE_FILE.read_text())
    grace = float(_compose_default("FOLDSERVE_GRACE_SECONDS"))
    stop = _seconds(compose["services"]["server"]["stop_grace_period"])
    assert stop > delay + grace, "compose would SIGKILL a replica still draining"


def test_compose_puts_the_balancer_in_front_of_the_replicas():
    services = yaml.safe_load(COMPOSE_FILE.read_text())["services"]
    balancer, server = services["balancer"], services["server"]
    assert balancer["depends_on"] == {"server": {"condition": "service_healthy"}}
    assert "./deploy/balancer:/usr/local/etc/haproxy:ro" in balancer["volumes"]
    assert any(p.endswith(":50051") and "FOLDSERVE_GRPC_HOST_PORT" in p for p in balancer["ports"])
    assert "ports" not in server, "replicas are reached through the balancer, not host ports"
    assert set(server["expose"]) == {"50051", "9100"}
    assert "FOLDSERVE_DRAIN_DELAY_SECONDS" in _server_environment()
