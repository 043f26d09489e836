"""The baselines on each Python gRPC runtime (sync, asyncio, uvloop), which of them a run starts
(`--baselines`, `--runtimes`), and the fastest echo every foldserve figure is held to. Real
servers in their own processes; no timing assertions."""

from __future__ import annotations

import argparse
import builtins
import dataclasses
import sys
from pathlib import Path

import grpc
import numpy as np
import pytest

from foldserve._proto.foldserve.v1 import predictor_pb2 as pb
from foldserve.bench.baselines import aio, echo
from foldserve.bench.suite import plan, results, servers, workloads
from foldserve.bench.suite.measure import Measurement
from foldserve.bench.suite.rounds import IN_FLIGHT, SEQUENTIAL, Collected
from foldserve.bench.suite.workloads import PREDICT, STREAM
from foldserve.core.model import Model

RUNTIMES = ("sync", "aio", "uvloop")


@pytest.fixture(scope="module")
def running(tiny_model_path: Path, tmp_path_factory: pytest.TempPathFactory):
    """The echo floor and the bare model server on every runtime, as a run starts them."""
    pytest.importorskip("uvloop")
    specs = servers.baseline_specs(str(tiny_model_path), 128)
    logs = tmp_path_factory.mktemp("runtimes")
    with servers.start_all(specs, logs) as started:
        for name, server in started.items():
            assert isinstance(server, servers.Server), f"{name}: {server}"
        yield started


@pytest.mark.parametrize("kind", ["echo", "bare"])
@pytest.mark.parametrize("runtime", RUNTIMES)
def test_every_runtime_answers_every_grpc_workload(
    running, tiny_model: Model, kind: str, runtime: str
) -> None:
    server = running[f"{kind}-{runtime}"]
    spec = tiny_model.require_classifier()
    every = {**workloads.unary_workloads(spec), STREAM: workloads.stream_workload(spec, 5)}
    sizes = {name: workloads.reply_bytes(server.target, w) for name, w in every.items()}
    assert all(size > workloads.FRAME_HEADER for size in sizes.values())
    assert sizes[STREAM] % 5 == 0  # one reply per message


@pytest.mark.parametrize("runtime", ["aio", "uvloop"])
def test_the_bare_server_on_asyncio_answers_what_the_model_computes(
    running, tiny_model: Model, runtime: str
) -> None:
    features = workloads.example(tiny_model.require_classifier())
    expected = tiny_model.run_classifier(features.reshape(1, -1))["probabilities"][0]
    with grpc.insecure_channel(running[f"bare-{runtime}"].target) as channel:
        predict = channel.unary_unary(
            "/foldserve.v1.Predictor/Predict",
            pb.PredictRequest.SerializeToString,
            pb.PredictResponse.FromString,
        )
        reply = predict(pb.PredictRequest(features=features.tolist()), timeout=10)
    np.testing.assert_allclose(reply.probabilities, expected, atol=1e-6)


def test_uvloop_missing_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def no_uvloop(name, *args, **kwargs):
        if name == "uvloop":
            raise ImportError("No module named 'uvloop'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_uvloop)
    with pytest.raises(echo.RuntimeUnavailable, match="pip install uvloop"):
        aio.loop_runner("uvloop")
    assert aio.loop_runner("aio").__module__ == "asyncio.runners"
    with pytest.raises(ValueError, match="not an asyncio runtime"):
        aio.loop_runner("sync")


def test_runtimes_and_baselines_choose_the_servers() -> None:
    specs = servers.baseline_specs("m.onnx", 128, kinds=("echo",), runtimes=("uvloop", "sync"))
    assert [s.name for s in specs] == ["echo-sync", "echo-uvloop"]
    assert specs[1].command[-2:] == ("--runtime", "uvloop")
    assert sys.executable == specs[0].command[0]
    assert servers.baseline_specs("m.onnx", 128, kinds=()) == []
    everything = [s.name for s in servers.specs("m.onnx", (1,), 128, ("bare",), ("aio",))]
    assert everything == ["bare-aio", "foldserve"]


def test_the_runtime_flags_parse_to_ordered_choices() -> None:
    runtimes = plan.choices(plan.RUNTIMES)
    assert runtimes("uvloop, sync") == ("sync", "uvloop")
    baselines = plan.choices(plan.BASELINE_KINDS, none=True)
    assert baselines("none") == () and baselines("bare,echo") == ("echo", "bare")
    for bad in ("tokio", "", "none"):
        with pytest.raises(argparse.ArgumentTypeError, match="expected some of"):
            runtimes(bad)


def _args(**given) -> argparse.Namespace:
    names = [f.name for f in dataclasses.fields(plan.Plan)]
    return argparse.Namespace(**{**dict.fromkeys(names), "model": "m", "out": "o", **given})


def test_the_full_run_takes_every_runtime_and_the_short_one_the_fastest_echo() -> None:
    full = plan.from_args(_args(short=False))
    assert full.runtimes == RUNTIMES and full.baselines == ("echo", "bare")
    short = plan.from_args(_args(short=True))
    assert short.runtimes == (plan.SHORT_RUNTIME,) and short.baselines == ("echo",)
    chosen = plan.from_args(_args(short=True, runtimes=("aio",), baselines=("echo", "bare")))
    assert chosen.runtimes == ("aio",) and chosen.baselines == ("echo", "bare")


def _collected(figures: dict[str, list[dict[str, float]]]) -> Collected:
    """Rounds of Predict at 8 in flight (and sequentially), by server."""
    collected = Collected()
    for server, rounds in figures.items():
        for section, level in ((IN_FLIGHT, 8), (SEQUENTIAL, 1)):
            for figure in rounds:
                collected.add((section, PREDICT, server, level), Measurement(figure, np.empty(0)))
    return collected


def test_foldserve_is_held_to_the_fastest_echo_of_each_figure() -> None:
    cheap_slow = {"server_cpu_us_per_call": 50.0, "calls_per_s": 1000.0, "p50_us": 90.0}
    dear_fast = {"server_cpu_us_per_call": 80.0, "calls_per_s": 3000.0, "p50_us": 100.0}
    ours = {"server_cpu_us_per_call": 100.0, "calls_per_s": 2400.0, "p50_us": 180.0}
    collected = _collected(
        {
            "echo-sync": [cheap_slow, cheap_slow],
            "echo-aio": [dear_fast, dear_fast],
            "bare-sync": [ours, ours],
            "foldserve": [ours, ours],
        }
    )
    key = (IN_FLIGHT, PREDICT, "foldserve", 8)
    assert results.fastest_echo(collected, key, "server_cpu_us_per_call") == "echo-sync"
    assert results.fastest_echo(collected, key, "calls_per_s") == "echo-aio"
    assert results.fastest_echo(collected, key, "p50_us") == "echo-sync"
    over = results.sections(collected, {})[IN_FLIGHT][PREDICT]["foldserve"]["8"]["over_echo"]
    assert over["server_cpu_us_per_call"]["median"] == 2.0
    assert over["server_cpu_us_per_call"]["echo"] == "echo-sync"
    assert over["calls_per_s"]["median"] == 0.8 and over["calls_per_s"]["echo"] == "echo-aio"
    settings = plan.Plan(model="m", out=Path("o"), in_flight=(8,))
    targets = {t["name"]: t for t in results.targets(collected, settings, {})}
    at_8 = targets["server CPU per Predict call, 8 in flight, / fastest echo"]
    assert at_8["against"] == "echo-sync" and at_8["ratio"]["median"] == 2.0
    assert at_8["met"] is False
