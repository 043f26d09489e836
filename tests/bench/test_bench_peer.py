"""The MLServer peer of `foldserve bench --peer mlserver`, without installing MLServer: the venv
under the cache directory (pip mocked), its reuse, an installation that fails, and the files an
MLServer would read (settings, model settings, the custom runtime)."""

from __future__ import annotations

import ast
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from foldserve.bench.suite import peer, report, results, suite
from foldserve.bench.suite.measure import Measurement
from foldserve.bench.suite.plan import Plan
from foldserve.bench.suite.rounds import IN_FLIGHT, SEQUENTIAL, Collected
from foldserve.bench.suite.workloads import INFER_TYPED, REST_JSON
from foldserve.core.model import Model


class _FakeInstall:
    """Stands in for `python -m venv` and pip: makes bin/mlserver, counts the installs."""

    def __init__(self) -> None:
        self.installs: list[list[str]] = []

    def create_venv(self, venv: Path) -> None:
        (venv / "bin").mkdir(parents=True, exist_ok=True)
        (venv / "bin" / "python").write_text("")

    def pip_install(self, venv: Path, packages: list[str]) -> None:
        self.installs.append(packages)
        (venv / "bin" / "mlserver").write_text("#!/bin/sh\n")


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> _FakeInstall:
    install = _FakeInstall()
    monkeypatch.setattr(peer, "create_venv", install.create_venv)
    monkeypatch.setattr(peer, "pip_install", install.pip_install)
    return install


def test_the_venv_lives_under_the_cache_directory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert peer.cache_dir() == tmp_path / "foldserve" / "peers" / "mlserver-1.7.1"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert peer.cache_dir().parent == Path.home() / ".cache" / "foldserve" / "peers"
    assert peer.cache_dir(tmp_path / "mine") == tmp_path / "mine" / "mlserver-1.7.1"


def test_the_peer_pins_mlserver_and_our_onnxruntime_and_grpcio() -> None:
    import grpc
    import onnxruntime

    assert peer.requirements() == [
        "mlserver==1.7.1",
        f"onnxruntime=={onnxruntime.__version__}",
        f"grpcio=={grpc.__version__}",
    ]


def test_it_installs_once_and_reuses_the_venv(
    fake: _FakeInstall, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    venv, said = tmp_path / "mlserver-1.7.1", []
    executable = peer.ensure(venv, said.append)
    assert executable == venv / "bin" / "mlserver" and executable.exists()
    assert fake.installs == [peer.requirements()] and "once, reused after" in said[0]
    marker = json.loads((venv / peer.MARKER).read_text())
    assert marker["requirements"] == peer.requirements()
    assert peer.ensure(venv, said.append) == executable
    assert len(fake.installs) == 1  # reused
    monkeypatch.setattr(peer, "requirements", lambda: ["mlserver==9.9"])
    peer.ensure(venv, said.append)
    assert fake.installs[-1] == ["mlserver==9.9"]  # other versions: installed again


def test_a_failed_install_is_a_peer_error_with_pips_last_words(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    def run(command, **kwargs):
        if "pip" in command:
            output = "Collecting mlserver\nERROR: No matching distribution found for mlserver\n"
            return subprocess.CompletedProcess(command, 1, output, "")
        return subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setattr(peer.subprocess, "run", run)
    venv = tmp_path / "venv"
    with pytest.raises(peer.PeerError, match="No matching distribution") as raised:
        peer.ensure(venv, lambda text: None)
    assert "could not install mlserver==1.7.1" in str(raised.value)
    assert not (venv / peer.MARKER).exists()  # the next run tries again


def test_the_files_mlserver_reads(tiny_model: Model, tmp_path: Path) -> None:
    ports = [1001, 1002, 1003]
    peer.write_files(tmp_path, tiny_model, ports)
    settings = json.loads((tmp_path / "settings.json").read_text())
    assert settings["parallel_workers"] == 0 and settings["debug"] is False
    assert (settings["grpc_port"], settings["http_port"], settings["metrics_port"]) == (
        1001,
        1002,
        1003,
    )
    folder = tmp_path / "models" / "foldserve"
    model = json.loads((folder / "model-settings.json").read_text())
    assert model["name"] == "foldserve"
    assert model["implementation"] == "foldserve_peer_runtime.OnnxModel"
    assert Path(model["parameters"]["uri"]).resolve() == Path(tiny_model.path).resolve()
    # The outputs foldserve serves (a trained model's taps left out), FP32, batch dimension -1.
    assert [o["name"] for o in model["outputs"]] == ["logits", "probabilities"]
    assert model["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 64]}]
    runtime = ast.parse((folder / "foldserve_peer_runtime.py").read_text())
    classes = {n.name: n for n in runtime.body if isinstance(n, ast.ClassDef)}
    assert [base.id for base in classes["OnnxModel"].bases] == ["MLModel"]
    methods = {n.name for n in classes["OnnxModel"].body if isinstance(n, ast.AsyncFunctionDef)}
    assert methods == {"load", "predict"}


def test_the_spec_waits_for_the_model_and_both_ports(tmp_path: Path) -> None:
    spec = peer.spec(tmp_path / "bin" / "mlserver", tmp_path, [1001, 1002, 1003])
    assert spec.command == (str(tmp_path / "bin" / "mlserver"), "start", str(tmp_path))
    assert spec.ports == (1001, 1002) and spec.workloads == peer.PEER_WORKLOADS
    assert any("1001" in line for line in spec.ready) and any("1002" in line for line in spec.ready)
    assert len(set(peer.free_ports(3))) == 3


def test_a_peer_that_cannot_be_installed_leaves_the_rest_measured(
    monkeypatch: pytest.MonkeyPatch, tiny_model: Model, tmp_path: Path
) -> None:
    def prepare(*args):
        raise peer.PeerError("could not install mlserver==1.7.1: no network")

    monkeypatch.setattr(peer, "prepare", prepare)
    settings = Plan(model=str(tiny_model.path), out=tmp_path, peer="mlserver")
    specs, info = suite._specs(settings, tiny_model, tmp_path)
    assert "mlserver" not in [s.name for s in specs] and "foldserve" in [s.name for s in specs]
    assert info == {"name": "mlserver", "error": "could not install mlserver==1.7.1: no network"}


def test_the_peer_targets_are_ratios_of_the_same_workload(tmp_path: Path) -> None:
    collected = Collected()
    figures = {
        "foldserve": {"calls_per_s": 3000.0, "server_cpu_us_per_call": 150.0, "p50_us": 200.0},
        "mlserver": {"calls_per_s": 1000.0, "server_cpu_us_per_call": 400.0, "p50_us": 400.0},
    }
    for server, figure in figures.items():
        for key in ((IN_FLIGHT, INFER_TYPED, server, 32), (SEQUENTIAL, INFER_TYPED, server, 1)):
            collected.add(key, Measurement(figure, np.empty(0)))
    settings = Plan(model="m", out=tmp_path)
    why = {REST_JSON: "foldserve: no http_port= on its startup line"}
    targets = {t["name"]: t for t in results.peer_targets(collected, settings, "mlserver", why)}
    rate = targets["ModelInfer typed: calls/s at 32 in flight"]
    assert rate["ratio"]["median"] == 3.0 and rate["met"] is True
    assert rate["top"]["median"] == 3000.0 and rate["bottom"]["median"] == 1000.0
    cpu = targets["ModelInfer typed: server CPU per call, sequential"]
    assert cpu["ratio"]["median"] == 0.375 and cpu["goal"] == "<= 0.6" and cpu["met"] is True
    assert targets["ModelInfer typed: sequential p50"]["met"] is True
    rest = targets["REST JSON: sequential p50"]
    assert rest["ratio"] is None and rest["missing"] == why[REST_JSON]
    lines = report._peer_targets(list(targets.values()), "mlserver")
    assert lines[0] == "| figure | foldserve | mlserver | foldserve / mlserver | goal | met |"
    assert "| ModelInfer typed: calls/s at 32 in flight | 3,000 | 1,000 | 3.00 |" in lines[2]
