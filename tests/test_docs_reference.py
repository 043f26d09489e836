"""The reference pages generated from the code match the code; and, checked against a second
source each: `foldserve serve --help` lists the settings the page lists, a running server exposes
the metric families the page lists, and the compiled protos have the RPCs the page lists."""

from __future__ import annotations

import re
import runpy
import subprocess
import sys
from pathlib import Path

from prometheus_client import generate_latest

from foldserve._proto.foldserve.v1 import predictor_pb2
from foldserve._proto.inference import grpc_predict_v2_pb2
from tests.service.model_files import write_tapped_model
from tests.service.rest_server import start_rest
from tests.service.subprocess_server import REPO

PAGES = runpy.run_path(str(REPO / "docs" / "reference_pages.py"))
REFERENCE = REPO / "docs" / "reference"


def test_every_generated_page_is_up_to_date() -> None:
    stale = [
        str(path.relative_to(REPO))
        for path, text in PAGES["pages"]().items()
        if not path.exists() or path.read_text() != text
    ]
    assert not stale, f"run `python docs/reference_pages.py` and commit: {stale}"


def _help_settings() -> dict[str, tuple[str, str]]:
    """flag -> (variable, default) as `foldserve serve --help` shows them."""
    text = subprocess.run(
        [sys.executable, "-m", "foldserve.cli", "serve", "--help"],
        capture_output=True, text=True, cwd=REPO, timeout=60, check=True,
    ).stdout  # fmt: skip
    text = re.sub(r"\s+", " ", text)
    found = {}
    # A flag, its placeholder (upper case, or on|off), its help, then [env VAR, default D].
    pattern = r"(--[a-z-]+) (?:[A-Z][^ ]*|on\|off) .*?\[env (\w+)(?:, default ([^\]]+)|: [^\]]+)\]"
    for flag, env, default in re.findall(pattern, text):
        found[flag] = (env, default or "none")
    return found


def _page_settings() -> dict[str, tuple[str, str]]:
    """flag -> (variable, default) as the settings page's `foldserve serve` section has them."""
    text = (REFERENCE / "settings.md").read_text()
    serve = text.split("## foldserve serve\n", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `(--[a-z-]+) [^`]+` \| `(\w+)` \| ([^|]+) \|", serve, flags=re.M)
    return {flag: (env, default.strip()) for flag, env, default in rows}


def test_serve_help_and_the_settings_page_agree() -> None:
    shown, documented = _help_settings(), _page_settings()
    assert len(documented) >= 20
    assert shown == documented


def test_the_settings_page_has_every_command() -> None:
    text = (REFERENCE / "settings.md").read_text()
    for command in ("serve", "predict", "health", "train", "export", "fold", "lab", "bench"):
        assert f"\n## foldserve {command}\n" in text, command


def test_a_running_server_exposes_the_metric_families_the_page_lists(tmp_path: Path) -> None:
    server = start_rest(write_tapped_model(tmp_path / "model.onnx", [0.0] * 4))
    try:
        body = b'{"inputs":[{"name":"input","shape":[1,4],"datatype":"FP32","data":[0,0,0,0]}]}'
        status, _, _ = server.request("POST", "/v2/models/foldserve/infer", body)
        assert status == 200
        exposed = generate_latest(server.registry).decode()
    finally:
        server.stop()
    # A counter is typed under its name with or without _total, by prometheus_client's release;
    # the _created series are prometheus_client's own (`foldserve serve` turns them off).
    typed = re.findall(r"^# TYPE (foldserve_\w+) (\w+)$", exposed, flags=re.M)
    families = {(n.removesuffix("_total"), t) for n, t in typed if not n.endswith("_created")}
    page = (REFERENCE / "metrics.md").read_text()
    listed = re.findall(r"^## (foldserve_\w+)\n\n(\w+);", page, flags=re.M)
    assert families == {(n.removesuffix("_total"), t) for n, t in listed}


def test_the_protos_page_has_every_rpc_the_server_compiles() -> None:
    page = (REFERENCE / "protos.md").read_text()
    for module in (predictor_pb2, grpc_predict_v2_pb2):
        for service in module.DESCRIPTOR.services_by_name.values():
            assert f"### service {service.name}\n" in page
            for method in service.methods:
                assert f"| `{method.name}` |" in page, (service.name, method.name)
