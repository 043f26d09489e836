"""A firing FoldserveDown reaches a receiver: real Prometheus and Alertmanager on 127.0.0.1 with the
repository's configs, and a webhook server of the test's own standing in for the pager.

The copies the test runs differ from the repository's files in addresses and times only: the
foldserve job scrapes a port where nothing listens (a replica that is down), Prometheus sends to
the test's Alertmanager, each webhook URL points at the test's server (same path), FoldserveDown's
`for: 1m` becomes 2 s and the route's group waits and intervals 1 s, so the test takes seconds.
"""

from __future__ import annotations

import json
import re
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from tests.integration.deploy_prometheus import prometheus_config_for, run_prometheus
from tests.integration.deploy_tools import (
    DEPLOY,
    RULES_DIR,
    free_port,
    require_programs,
    run,
    tail,
    wait_for,
)

pytestmark = pytest.mark.integration

ALERTMANAGER_CONFIG = DEPLOY / "alertmanager" / "alertmanager.yml"
SHORT = "1s"


class Webhook:
    """An HTTP server on 127.0.0.1 that keeps every JSON body POSTed to it, with its path."""

    def __init__(self) -> None:
        received: list[tuple[str, dict]] = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                received.append((self.path, json.loads(body)))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.received = received
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def alertmanager_config_for(webhook: str, out_dir: Path) -> Path:
    """The repository's alertmanager.yml with every webhook at `webhook` and 1 s group timers."""
    config = yaml.safe_load(ALERTMANAGER_CONFIG.read_text())
    for receiver in config["receivers"]:
        for hook in receiver.get("webhook_configs", []):
            hook["url"] = re.sub(r"^https?://[^/]+", webhook, hook["url"])
    for route in [config["route"], *config["route"].get("routes", [])]:
        for timer in ("group_wait", "group_interval", "repeat_interval"):
            if timer in route:
                route[timer] = SHORT
    path = out_dir / "alertmanager.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def rules_with_short_for(out_dir: Path) -> Path:
    """A copy of the repository's rule files in which FoldserveDown waits 2 s instead of 1 m."""
    out_dir.mkdir(parents=True)
    for path in RULES_DIR.glob("*.yml"):
        rules = yaml.safe_load(path.read_text())
        for group in rules["groups"]:
            for rule in group["rules"]:
                if rule.get("alert") == "FoldserveDown":
                    rule["for"] = "2s"
        (out_dir / path.name).write_text(yaml.safe_dump(rules, sort_keys=False))
    return out_dir


@contextmanager
def run_alertmanager(binary: str, config: Path, workdir: Path) -> Iterator[str]:
    """Alertmanager on 127.0.0.1 (no cluster peers); yields its host:port."""
    address = f"127.0.0.1:{free_port()}"
    log = workdir / "alertmanager.log"
    command = [
        binary, f"--config.file={config}", f"--storage.path={workdir / 'am-data'}",
        f"--web.listen-address={address}", "--cluster.listen-address=",
    ]  # fmt: skip
    with log.open("w") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=sink, stdin=subprocess.DEVNULL)
    try:
        import urllib.request

        def ready() -> bool:
            assert process.poll() is None, f"alertmanager exited:\n{tail(log)}"
            with urllib.request.urlopen(f"http://{address}/-/ready", timeout=2) as response:
                return response.status == 200

        wait_for(ready, timeout=30, what="Alertmanager to be ready", detail=lambda: tail(log))
        yield address
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def test_amtool_accepts_the_config_and_routes_by_severity():
    amtool = require_programs("amtool")["amtool"]
    run([amtool, "check-config", str(ALERTMANAGER_CONFIG)], timeout=60)
    for labels, receiver in (
        (["severity=page", "alertname=FoldserveDown"], "foldserve-page"),
        (["severity=ticket", "alertname=FoldserveInputShift"], "foldserve-tickets"),
        (["alertname=Other"], "foldserve-tickets"),
    ):
        result = run(
            [amtool, "config", "routes", "test", f"--config.file={ALERTMANAGER_CONFIG}", *labels],
            timeout=60,
        )
        assert result.stdout.strip() == receiver, (labels, result.stdout)


def test_a_firing_foldserve_down_reaches_the_page_receiver(tmp_path: Path):
    programs = require_programs("prometheus", "prometheus-alertmanager")
    webhook = Webhook()
    try:
        config = alertmanager_config_for(webhook.url, tmp_path)
        with run_alertmanager(programs["prometheus-alertmanager"], config, tmp_path) as manager:
            nobody = f"127.0.0.1:{free_port()}"  # a replica that does not answer
            prometheus_config = prometheus_config_for(
                nobody, tmp_path / "prometheus", "1s", alertmanager=manager,
                rules_dir=rules_with_short_for(tmp_path / "rules"),
            )  # fmt: skip
            with run_prometheus(programs["prometheus"], prometheus_config, tmp_path / "prometheus"):

                def paged() -> list[dict]:
                    return [
                        alert
                        for path, body in webhook.received
                        if path == "/foldserve/page"
                        for alert in body["alerts"]
                        if alert["labels"]["alertname"] == "FoldserveDown"
                        and alert["status"] == "firing"
                    ]

                (alert, *_) = wait_for(
                    paged, timeout=60, what="FoldserveDown at the page webhook",
                    detail=lambda: f"received: {webhook.received}",
                )  # fmt: skip
    finally:
        webhook.close()
    assert alert["labels"]["severity"] == "page"
    assert alert["labels"]["instance"] == nobody
    assert nobody in alert["annotations"]["summary"]
