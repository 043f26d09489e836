"""The benchmark suite's parts, without h2load: the baseline servers, the workloads and their
check, CPU accounting, statistics, the plan, the load generator's output parsing (against a
stand-in h2load) and a server that does not start. No timing assertions: speed lives in the
printed figures."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import grpc
import numpy as np
import pytest

from foldserve._proto.foldserve.v1 import predictor_pb2 as pb
from foldserve._proto.inference import grpc_predict_v2_pb2 as v2
from foldserve.bench.baselines import echo
from foldserve.bench.baselines.bare_server import Bare
from foldserve.bench.suite import cpu, plan, servers, stats, workloads
from foldserve.bench.suite.workloads import INFER_RAW, INFER_TYPED, STREAM
from foldserve.core.model import Model


@pytest.fixture(scope="module")
def baselines(tiny_model: Model):
    """The echo floor and the bare model server, in-process on 127.0.0.1."""
    started = {
        name: echo.start("127.0.0.1", answers)
        for name, answers in (("echo", echo.Echo()), ("bare", Bare(tiny_model)))
    }
    yield {name: f"127.0.0.1:{port}" for name, (_, port) in started.items()}
    for server, _ in started.values():
        server.stop(0)


def _workloads(model: Model) -> dict[str, workloads.Workload]:
    return {
        **workloads.unary_workloads(model.require_classifier()),
        STREAM: workloads.stream_workload(model.require_classifier(), 5),
    }


@pytest.mark.parametrize("server", ["echo", "bare"])
def test_baselines_answer_every_workload(baselines, tiny_model: Model, server: str) -> None:
    sizes = {
        name: workloads.reply_bytes(baselines[server], w)
        for name, w in _workloads(tiny_model).items()
    }
    assert all(size > workloads.FRAME_HEADER for size in sizes.values())
    # Five stream messages, five equal replies.
    assert sizes[STREAM] % 5 == 0


def test_the_bare_server_answers_what_the_model_computes(baselines, tiny_model: Model) -> None:
    features = workloads.example(tiny_model.require_classifier())
    expected = tiny_model.run_classifier(features.reshape(1, -1))
    with grpc.insecure_channel(baselines["bare"]) as channel:
        predict = channel.unary_unary(
            "/foldserve.v1.Predictor/Predict",
            pb.PredictRequest.SerializeToString,
            pb.PredictResponse.FromString,
        )
        infer = channel.unary_unary(
            "/inference.GRPCInferenceService/ModelInfer",
            v2.ModelInferRequest.SerializeToString,
            v2.ModelInferResponse.FromString,
        )
        reply = predict(pb.PredictRequest(features=features.tolist()), timeout=10)
        raw = infer(v2.ModelInferRequest.FromString(_workloads(tiny_model)[INFER_RAW].message))
        typed = infer(v2.ModelInferRequest.FromString(_workloads(tiny_model)[INFER_TYPED].message))
    np.testing.assert_allclose(reply.probabilities, expected["probabilities"][0], atol=1e-6)
    assert reply.label == int(expected["logits"][0].argmax())
    assert len(raw.raw_output_contents) == 2 and not typed.raw_output_contents
    logits = np.frombuffer(raw.raw_output_contents[0], "<f4")
    np.testing.assert_allclose(logits, expected["logits"][0], atol=1e-5)
    np.testing.assert_allclose(typed.outputs[0].contents.fp32_contents, logits, atol=1e-6)


def test_a_workload_the_server_does_not_serve_is_refused(baselines, tiny_model: Model) -> None:
    missing = workloads.Workload("Predict", "/foldserve.v1.Predictor/Nothing", b"")
    with pytest.raises(workloads.WorkloadError, match="UNIMPLEMENTED"):
        workloads.reply_bytes(baselines["echo"], missing)


def test_a_frame_is_a_flag_a_big_endian_length_and_the_message() -> None:
    assert workloads.frame(b"abc") == b"\x00\x00\x00\x00\x03abc"
    stream = workloads.Workload(STREAM, "/p", b"xy", messages=3)
    assert stream.body == b"\x00\x00\x00\x00\x02xy" * 3


def test_tree_cpu_counts_the_process_and_its_descendants(tmp_path: Path) -> None:
    if not cpu.available():
        pytest.skip("no /proc here")
    burn = "import time\nend = time.process_time() + 0.3\nwhile time.process_time() < end: pass\n"
    script = tmp_path / "tree.py"
    script.write_text(
        "import subprocess, sys, time\n"
        f"child = subprocess.Popen([sys.executable, '-c', {burn!r} + 'time.sleep(30)'])\n"
        f"exec({burn!r})\n"
        "print('burnt', flush=True)\ntime.sleep(30)\n"
    )
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None and parent.stdout.readline().strip() == "burnt"
        deadline = time.monotonic() + 20
        while cpu.tree_cpu_seconds(parent.pid) < 0.5 and time.monotonic() < deadline:
            time.sleep(0.1)
        # Both processes burnt 0.3 s; the parent alone cannot account for more than about that.
        assert cpu.tree_cpu_seconds(parent.pid) >= 0.5
    finally:
        for proc in _children(parent.pid):
            os.kill(proc, 9)
        parent.kill()
        parent.wait(10)
    assert cpu.tree_cpu_seconds(parent.pid) == 0.0


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


def test_spread_and_ratios_are_taken_round_by_round() -> None:
    assert stats.spread([3.0, 1.0, 2.0]) == {
        "median": 2.0,
        "min": 1.0,
        "max": 3.0,
        "rounds": [3.0, 1.0, 2.0],
    }
    assert stats.spread([None, 4.0])["rounds"] == [4.0]
    assert stats.spread([None]) is None
    ratio = stats.ratio_spread([2.0, 9.0, 3.0], [1.0, 3.0, 3.0])
    assert ratio is not None and ratio["rounds"] == [2.0, 3.0, 1.0] and ratio["median"] == 2.0
    assert stats.percentiles(np.arange(101.0)) == {"p50_us": 50.0, "p90_us": 90.0, "p99_us": 99.0}
    curve = stats.cdf(np.arange(1000.0), points=11)
    assert curve["latency_us"] == sorted(curve["latency_us"]) and curve["quantile"][0] == 0.0


def test_calls_in_flight_are_split_evenly_over_connections() -> None:
    settings = plan.Plan(model="m", out=Path("o"), connections=8)
    assert [settings.split(n) for n in (1, 8, 32, 64, 12, 7)] == [
        (1, 1),
        (8, 1),
        (8, 4),
        (8, 8),
        (6, 2),
        (7, 1),
    ]


def test_the_short_preset_takes_given_flags_over_its_own() -> None:
    names = (
        "rounds",
        "calls",
        "warmup",
        "duration",
        "in_flight",
        "connections",
        "streams",
        "stream_messages",
        "workers",
        "h2load",
        "bn_kept_model",
        "runtimes",
        "baselines",
        "peer",
        "peer_cache",
    )
    args = argparse.Namespace(**dict.fromkeys(names), model="m.onnx", out="o", short=True)
    args.calls, args.workers = 7, (2,)
    settings = plan.from_args(args)
    assert settings.short and settings.calls == 7 and settings.rounds == 1
    assert settings.workers == (1, 2)  # one worker is always the baseline of the comparison
    # The short run: the echo floor on one runtime, beside foldserve.
    assert settings.baselines == ("echo",) and settings.runtimes == (plan.SHORT_RUNTIME,)
    with pytest.raises(argparse.ArgumentTypeError):
        plan.int_list("1,x")
    assert plan.int_list("1, 8,32") == (1, 8, 32)
    for parse, bad in (
        (plan.positive_int, "0"),
        (plan.positive_float, "-1"),
        (plan.positive_float, "inf"),
    ):
        with pytest.raises(argparse.ArgumentTypeError):
            parse(bad)


def test_workers_are_passed_only_above_one() -> None:
    commands = {spec.name: spec.command for spec in servers.specs("m.onnx", (1, 2), 128)}
    baselines = [f"{kind}-{r}" for kind in ("echo", "bare") for r in ("sync", "aio", "uvloop")]
    assert list(commands) == [*baselines, "foldserve", "foldserve-w2"]
    assert "--workers" not in commands["foldserve"]
    assert commands["foldserve-w2"][-2:] == ("--workers", "2")
    for command in commands.values():
        assert command[command.index("--max-concurrent-rpcs") + 1] == "128"


def test_the_one_worker_run_is_one_process() -> None:
    """`serve` defaults to a worker per CPU; the one-worker run, like the baselines, is one."""
    env = {spec.name: dict(spec.env) for spec in servers.specs("m.onnx", (1, 2), 128)}
    # Every foldserve asks for a REST port on a free port (a serve without one ignores it).
    assert env["foldserve"] == {"FOLDSERVE_WORKERS": "1", "FOLDSERVE_HTTP_PORT": "0"}
    assert env["foldserve-w2"] == {"FOLDSERVE_HTTP_PORT": "0"}
    assert env["echo-sync"] == {} and env["bare-aio"] == {}


def test_a_server_that_rejects_a_flag_is_reported_not_raised(tmp_path: Path) -> None:
    refuses = servers.ServerSpec(
        "foldserve-w2",
        (
            sys.executable,
            "-c",
            "import sys; sys.exit('error: unrecognized arguments: --workers 2')",
        ),
        workers=2,
    )
    answers = servers.ServerSpec("echo", (sys.executable, "-m", "foldserve.bench.baselines.echo"))
    with servers.start_all([refuses, answers], tmp_path) as started:
        assert isinstance(started["echo"], servers.Server) and started["echo"].port > 0
        error = started["foldserve-w2"]
        assert isinstance(error, servers.ServerStartError)
        assert "exited with code 1" in str(error) and "--workers yet" in error.reason
        process = started["echo"].process
    assert process.poll() is not None  # stopped on exit


def test_the_command_line_parser_loads_no_bench_machinery() -> None:
    # `foldserve health` (a HEALTHCHECK) builds the same parser: it must not pay for onnxruntime.
    code = (
        "import sys\nfrom foldserve.cli import build_parser\nbuild_parser(['health'])\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'onnxruntime', 'grpc', 'numpy'}))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_call_budget_times_every_stage_of_a_call(
    trained_mlp_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from foldserve.bench import call_budget

    model = str(trained_mlp_dir / "model.onnx")
    assert call_budget.main(["--model", model, "--calls", "20", "--blocks", "1"]) == 0
    printed = capsys.readouterr().out
    for stage in ("Predict handler, whole", "ModelInfer handler, whole", "shift monitor observe"):
        assert stage in printed
