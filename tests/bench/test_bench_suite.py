"""`foldserve bench --short`, run for real: servers in their own processes (the echo floor on its
short-run runtime, foldserve), h2load as the load generator, a BN-kept twin from
`bench/bn_kept_model.py`. Checks that the JSON has every section with sane numbers, and that the
report and the plots are written. No timing assertions: the speed goals live in the printed
figures.

Needs h2load (Debian's nghttp2-client, which .ci/run installs): skipped without it, failed in CI.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from foldserve.bench.suite.plan import SHORT_RUNTIME
from tests.integration.deploy_tools import skip_or_fail
from tests.service.subprocess_server import REPO, env

pytestmark = pytest.mark.integration

UNARY = ("Predict", "ModelInfer typed", "ModelInfer raw")
REST = ("REST JSON", "REST binary")
SERVERS = (f"echo-{SHORT_RUNTIME}", "foldserve")
BENCH_TIMEOUT_SECONDS = 300


@pytest.fixture(scope="module")
def bn_kept_model(trained_mlp_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bn-kept") / "model_bn_kept.onnx"
    command = [
        sys.executable,
        "bench/bn_kept_model.py",
        "--checkpoint",
        str(trained_mlp_dir / "checkpoint.pt"),
        "--out",
        str(out),
    ]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    assert "BatchNormalization nodes kept" in done.stdout
    return out


@pytest.fixture(scope="module")
def short_run(trained_mlp_dir: Path, bn_kept_model: Path, tmp_path_factory) -> tuple:
    """(the finished process, the JSON result, the output directory)."""
    if shutil.which("h2load") is None:
        skip_or_fail("h2load is not installed (apt-get install nghttp2-client; .ci/run does)")
    out = tmp_path_factory.mktemp("bench")
    model = str(trained_mlp_dir / "model.onnx")
    command = [
        sys.executable,
        "-m",
        "foldserve.cli",
        "bench",
        "--short",
        "--model",
        model,
        "--bn-kept-model",
        str(bn_kept_model),
        "--workers",
        "1,2",
        "--out",
        str(out),
    ]
    done = subprocess.run(
        command,
        cwd=REPO,
        env=env(),
        capture_output=True,
        text=True,
        timeout=BENCH_TIMEOUT_SECONDS,
    )
    assert (out / "bench.json").exists(), f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done, json.loads((out / "bench.json").read_text()), out


def _median(entry: dict, figure: str) -> float:
    value = entry[figure]
    assert isinstance(value, dict), f"{figure}: {value!r}"
    assert value["min"] <= value["median"] <= value["max"], figure
    assert all(math.isfinite(v) for v in value["rounds"]), figure
    return value["median"]


def _sane(entry: dict, where: str, per: str = "call") -> None:
    assert "error" not in entry, f"{where}: {entry['error']}"
    p50, p90, p99 = (_median(entry, f"p{p}_us") for p in (50, 90, 99))
    assert 0 < p50 <= p90 <= p99 < 60e6, where
    assert _median(entry, "calls") >= 1, where
    assert 0 < _median(entry, "calls_per_s") <= _median(entry, "examples_per_s"), where
    # Nothing here takes a tenth of a second of CPU per example (a stream's call has hundreds).
    assert 0 <= _median(entry, f"server_cpu_us_per_{per}") < 1e5, where
    assert 0 <= _median(entry, f"client_cpu_us_per_{per}") < 1e5, where


def test_only_workers_or_rest_not_landed_yet_may_be_missing(short_run) -> None:
    done, result, _ = short_run
    workers = result["workers"]
    assert "calls_per_s" in workers["1"], workers["1"]
    missing = {(e["server"], e["workload"]): e["why"] for e in result["missing"]}
    unlanded = "error" in workers["2"] or missing
    assert done.returncode == (1 if unlanded else 0), done.stderr
    if "error" in workers["2"]:  # `foldserve serve --workers` has not landed yet
        assert "does not accept --workers" in workers["2"]["error"], workers["2"]
    if missing:  # `foldserve serve` reports no http_port= yet
        assert set(missing) == {("foldserve", w) for w in REST}, missing
        assert all("no http_port=" in why for why in missing.values()), missing


def test_every_server_method_and_level_has_sane_figures(short_run) -> None:
    _, result, _ = short_run
    assert [s["name"] for s in result["servers"]] == list(SERVERS)
    rest = [w for w in REST if w in result["sequential"]]
    for workload in [*UNARY, *rest]:
        for server in SERVERS if workload in UNARY else ("foldserve",):
            _sane(result["sequential"][workload][server], f"sequential {workload} {server}")
            levels = result["in_flight"][workload][server]
            assert sorted(levels, key=int) == ["1", "8", "32", "64"]
            for level, entry in levels.items():
                _sane(entry, f"{level} in flight {workload} {server}")
            if server == "foldserve" and workload in UNARY:
                over = result["sequential"][workload][server]["over_echo"]
                assert _median(over, "p50_us") > 0 and over["p50_us"]["echo"] == SERVERS[0]
    for server in SERVERS:
        for count in ("1", "4"):
            entry = result["streams"][server][count]
            _sane(entry, f"{count} streams {server}", per="example")
            assert _median(entry, "examples") == 200 * int(count)


def test_every_target_is_a_ratio_of_this_run(short_run) -> None:
    _, result, _ = short_run
    names = [target["name"] for target in result["targets"]]
    assert len(names) == 15 and len(set(names)) == 15
    for target in result["targets"]:
        if target["ratio"] is None:
            assert target["name"].startswith("--workers 2"), target
            continue
        assert _median(target, "ratio") > 0 and target["met"] in (True, False), target


def test_onnxruntime_alone_compares_folded_and_bn_kept(short_run) -> None:
    _, result, _ = short_run
    ort = result["onnxruntime"]
    assert ort["bn_nodes"]["folded"]["file"] == 0 and ort["bn_nodes"]["bn_kept"]["file"] > 0
    assert ort["max_abs_difference"] < 1e-4  # the same network, folded or not
    assert sorted(ort["batches"], key=int) == ["1", "32", "256"]
    for entry in ort["batches"].values():
        for name in ("folded", "bn_kept"):
            assert _median(entry[name], "p50_us") > 0
        assert _median(entry, "kept_over_folded") > 0


def test_the_report_plots_and_latency_curves_are_written(short_run) -> None:
    done, result, out = short_run
    report = (out / "bench.md").read_text()
    headings = ("## Targets", "## Every figure, every server", "## foldserve --workers")
    for heading in (*headings, "## onnxruntime alone"):
        assert heading in report and heading in done.stdout
    assert result["meta"]["mode"] == "short" and result["meta"]["load_generator"].startswith(
        "h2load"
    )
    for workload in UNARY:
        for server in SERVERS:
            curve = result["cdf"][workload][server]["latency_us"]
            assert curve == sorted(curve) and curve[0] > 0
    pytest.importorskip("matplotlib")
    for name in ("latency_cdf.png", "throughput_in_flight.png", "throughput_workers.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name


def test_serve_ab_compares_variants_with_the_echo_floor(tiny_model_path: Path) -> None:
    """`bench/serve_ab.py` runs and prints each variant's figures over the echo floor's."""
    if shutil.which("h2load") is None:
        skip_or_fail("h2load (nghttp2-client) is not installed")
    command = [
        sys.executable, "bench/serve_ab.py", "--model", str(tiny_model_path),
        "--variant", "plain=--shift-monitor off", "--in-flight", "1", "--rounds", "1",
        "--duration", "0.2", "--sequential", "200",
    ]  # fmt: skip
    done = subprocess.run(
        command, cwd=REPO, env=env(), capture_output=True, text=True, timeout=BENCH_TIMEOUT_SECONDS
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    for label in ("sequential", "1 in flight"):
        plain = [line for line in lines if line.startswith(label) and " plain " in line]
        assert len(plain) == 1 and "/echo: rate " in plain[0], done.stdout
        assert "rate –" not in plain[0] and "p50 –" not in plain[0], done.stdout
