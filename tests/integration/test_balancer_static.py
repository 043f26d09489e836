"""The balancer's config and its wiring into the compose stack, checked without running them.

The config is read as HAProxy reads it (`sections`: each section's lines, the BALANCER_TLS blocks
resolved one way or the other); tests/integration/test_balancer_http.py runs it.
"""

from __future__ import annotations

import re

import pytest
import yaml

from tests.integration.deploy_balancer import (
    BACKEND,
    HAPROXY_CONFIG,
    HTTP_BACKEND,
    check_timings,
    detection_bound_seconds,
    health_check_request,
    health_reply_data_frame,
    seconds,
    sections,
)
from tests.integration.deploy_tools import (
    COMPOSE_FILE,
    GRPC_PORT,
    HTTP_PORT,
    METRICS_PORT,
    require_programs,
    run,
)

CONFIG = HAPROXY_CONFIG.read_text()
PLAIN, TLS = sections(CONFIG), sections(CONFIG, tls=True)
CHECK_TIMINGS = {"inter", "fastinter", "downinter", "fall", "rise"}


def _words(lines: list[str], keyword: str) -> list[list[str]]:
    """The arguments of every `keyword ...` line."""
    skip = len(keyword.split())
    return [line.split()[skip:] for line in lines if line.startswith(keyword + " ")]


def _one(lines: list[str], keyword: str) -> str:
    (found,) = _words(lines, keyword)
    return " ".join(found)


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
    assert ["proto", "h2"] in _words(PLAIN[f"backend {BACKEND}"], "default-server")


def test_calls_are_balanced_per_http2_stream_and_retried_elsewhere():
    assert re.search(r"^\s*mode http$", CONFIG, re.MULTILINE), "L7, not a TCP pass-through"
    assert _one(PLAIN["frontend grpc"], "bind") == f":{GRPC_PORT} proto h2"
    assert _one(PLAIN["defaults"], "retry-on") == "conn-failure empty-response"
    assert _one(PLAIN["defaults"], "option redispatch") == "1"
    assert not _words(PLAIN[f"backend {BACKEND}"], "retry-on"), "gRPC keeps the defaults'"
    template = _one(PLAIN[f"backend {BACKEND}"], "server-template")
    assert re.match(rf"replica 1-\d+ server:{GRPC_PORT} resolvers docker ", template)


def test_http_calls_are_balanced_per_request_checked_on_v2_readiness_and_retried():
    frontend, backend = PLAIN["frontend http"], PLAIN[f"backend {HTTP_BACKEND}"]
    # No `proto`: HTTP/1.1, and HTTP/2 with prior knowledge (h2c) by its preface.
    assert _one(frontend, "bind") == f":{HTTP_PORT}"
    assert "option disable-h2-upgrade" not in frontend + PLAIN["defaults"]
    assert _one(frontend, "default_backend") == HTTP_BACKEND
    assert "option httpchk" in backend
    send = _one(backend, "http-check send")
    assert re.fullmatch(r"meth GET uri /v2/health/ready ver HTTP/1\.1 hdr host \S+", send)
    assert _one(backend, "http-check expect") == "status 200", "a draining replica answers 503"
    # The defaults' conditions plus 503, which foldserve answers only to calls it did not run.
    retry_on = _one(backend, "retry-on").split()
    assert retry_on == [*_one(PLAIN["defaults"], "retry-on").split(), "503"]
    assert not {"500", "504", "response-timeout", "all-retryable-errors"} & set(retry_on)
    # Replayable only when HAProxy holds the whole request; never on gRPC (streams).
    assert "option http-buffer-request" in backend
    assert "option http-buffer-request" not in PLAIN[f"backend {BACKEND}"] + PLAIN["defaults"]
    # The same check timings as gRPC's (from `defaults`), so both sides drain alike.
    for words in _words(backend, "default-server"):
        assert not CHECK_TIMINGS & set(words), "the HTTP backend must not time its checks apart"
    assert not any("proto" in words for words in _words(backend, "default-server"))
    template = _one(backend, "server-template")
    assert re.match(rf"replica 1-\d+ server:{HTTP_PORT} resolvers docker ", template)
    assert template.split()[1] == _one(PLAIN[f"backend {BACKEND}"], "server-template").split()[1]


def test_the_tls_lines_cover_both_frontends_and_backends():
    certificate = "ssl crt /certs/balancer.pem ca-file /certs/ca.crt verify required"
    assert _one(TLS["frontend grpc"], "bind") == f":{GRPC_PORT} {certificate} alpn h2"
    assert _one(TLS["frontend http"], "bind") == f":{HTTP_PORT} {certificate} alpn h2,http/1.1"
    to_replicas = "ssl verify required ca-file /certs/ca.crt crt /certs/balancer.pem alpn"
    grpc_servers = [" ".join(w) for w in _words(TLS[f"backend {BACKEND}"], "default-server")]
    http_servers = [" ".join(w) for w in _words(TLS[f"backend {HTTP_BACKEND}"], "default-server")]
    assert f"{to_replicas} h2" in grpc_servers
    assert f"{to_replicas} http/1.1" in http_servers
    assert "tcp-check connect ssl alpn h2" in TLS[f"backend {BACKEND}"]
    # Without BALANCER_TLS nothing of it is left.
    assert "/certs/" not in "\n".join(line for lines in PLAIN.values() for line in lines)


def _server_environment() -> dict[str, str]:
    compose = yaml.safe_load(COMPOSE_FILE.read_text())
    return compose["services"]["server"]["environment"]


def _compose_default(variable: str) -> str:
    (value,) = re.findall(rf"\$\{{{variable}:-([^}}]+)\}}", COMPOSE_FILE.read_text())
    return value


def test_the_drain_delay_outlasts_the_balancers_detection():
    assert set(check_timings()) == CHECK_TIMINGS
    worst = detection_bound_seconds()
    delay = float(_compose_default("FOLDSERVE_DRAIN_DELAY_SECONDS"))
    assert delay >= 1.5 * worst, f"drain delay {delay} s vs detection up to {worst} s"
    compose = yaml.safe_load(COMPOSE_FILE.read_text())
    grace = float(_compose_default("FOLDSERVE_GRACE_SECONDS"))
    stop = seconds(compose["services"]["server"]["stop_grace_period"])
    assert stop > delay + grace, "compose would SIGKILL a replica still draining"


def test_compose_puts_the_balancer_in_front_of_the_replicas():
    services = yaml.safe_load(COMPOSE_FILE.read_text())["services"]
    balancer, server = services["balancer"], services["server"]
    assert balancer["depends_on"] == {"server": {"condition": "service_healthy"}}
    assert "./deploy/balancer:/usr/local/etc/haproxy:ro" in balancer["volumes"]
    published = {p.rsplit(":", 1)[1]: p for p in balancer["ports"]}
    assert "FOLDSERVE_GRPC_HOST_PORT" in published[str(GRPC_PORT)]
    assert "FOLDSERVE_HTTP_HOST_PORT" in published[str(HTTP_PORT)]
    assert "ports" not in server, "replicas are reached through the balancer, not host ports"
    assert set(server["expose"]) == {str(GRPC_PORT), str(HTTP_PORT), str(METRICS_PORT)}
    env = _server_environment()
    assert "FOLDSERVE_DRAIN_DELAY_SECONDS" in env
    assert (env["FOLDSERVE_PORT"], env["FOLDSERVE_HTTP_PORT"]) == (str(GRPC_PORT), str(HTTP_PORT))
