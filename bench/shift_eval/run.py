"""`foldserve shift-eval`: stream clean and shifted digits through a running server, one example
per call, and report when its covariate-shift monitor alarms, what fired and how accurate the
model stayed on each stream; then replay clean examples through the monitor's tests alone to
measure its false-alarm rate against the stated ARL.

Every stream gets a server of its own (`foldserve serve` on 127.0.0.1, a fresh process, so a
fresh monitor state). With `--workers N` the server runs N worker processes sharing one monitor
state per version (`core.shift.shared`: the directory is made here and named to the server in
`FOLDSERVE_SHIFT_STATE_DIR`); the client then spreads its calls over several connections, which
the kernel spreads over the workers, and the report says how many examples each worker folded in.
The client side is plain gRPC: `Predict` per example and, every `--sample-every` examples,
`DescribeModel` for the live scores.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

import grpc
import numpy as np

from foldserve._proto.foldserve.v1 import predictor_pb2 as pb
from foldserve._proto.foldserve.v1 import predictor_pb2_grpc as pb_grpc
from foldserve.bench.shift_eval.false_alarms import false_alarms, worker_shares
from foldserve.bench.shift_eval.report import (
    StreamResult,
    print_false_alarms,
    print_table,
    save_plot,
)
from foldserve.bench.shift_eval.streams import Stream, digits_streams
from foldserve.bench.suite.servers import ServerSpec, ServerStartError, start_all
from foldserve.core.loading import load_model
from foldserve.core.model import ModelError
from foldserve.core.shift.settings import SHIFT_PUBLISH_SECONDS, SHIFT_STATE_DIR_ENV
from foldserve.datasets import load_dataset, split_dataset

CONNECTIONS_PER_WORKER = 4  # the kernel spreads connections, not calls: several per worker


def _ratios(shift: pb.ShiftMonitor, attribute: str) -> dict[str, float]:
    values = {
        layer.layer: getattr(layer, attribute) / layer.threshold
        for layer in shift.layers
        if layer.threshold > 0
    }
    if shift.prior.threshold > 0:
        values["prior"] = getattr(shift.prior, attribute) / shift.prior.threshold
    return values


@contextmanager
def serve(model: Path, check_every: int | None, workers: int):
    """A `foldserve serve` of `model` on a free port (yields the server and the directory of its
    shared monitor state, None for one worker)."""
    command = [
        sys.executable, "-m", "foldserve.cli", "serve", "--model", str(model),
        "--host", "127.0.0.1", "--port", "0", "--http-port", "0", "--metrics-port", "0",
        "--poll-seconds", "0",
        "--workers", str(workers),
        *(["--shift-check-every", str(check_every)] if check_every else []),
    ]  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="foldserve-shift-eval-") as scratch:
        state = Path(scratch) / "state" if workers > 1 else None
        env = ()
        if state is not None:
            state.mkdir()
            env = ((SHIFT_STATE_DIR_ENV, str(state)),)
        spec = ServerSpec("foldserve", tuple(command), workers, env)
        with start_all([spec], Path(scratch)) as servers:
            server = servers["foldserve"]
            if isinstance(server, ServerStartError):
                raise server
            yield server, state


def _channels(target: str, count: int) -> list[grpc.Channel]:
    # A local subchannel pool: each channel its own connection, which the kernel may give to
    # another worker (channels to one target share one connection otherwise).
    options = [("grpc.use_local_subchannel_pool", 1)]
    return [grpc.insecure_channel(target, options=options) for _ in range(count)]


def run_stream(model: Path, stream: Stream, count: int, args: argparse.Namespace) -> StreamResult:
    """Stream `count` examples of `stream` through a fresh server of `model`."""
    correct = 0
    curve: list[tuple[int, float]] = []
    workers = args.workers
    with serve(model, args.check_every, workers) as (server, state):
        channels = _channels(server.target, CONNECTIONS_PER_WORKER * workers if workers > 1 else 1)
        stubs = itertools.cycle([pb_grpc.PredictorStub(channel) for channel in channels])
        describe = pb.DescribeModelRequest()
        for number, index in enumerate(stream.requests(count, args.seed), start=1):
            stub = next(stubs)
            reply = stub.Predict(
                pb.PredictRequest(features=stream.features[index].tolist()), timeout=10
            )
            correct += int(reply.label == stream.labels[index])
            if number % args.sample_every == 0 or number == count:
                now = _ratios(stub.DescribeModel(describe, timeout=10).shift, "score")
                curve.append((number, max(now.values())))
        if workers > 1:  # every worker folds what it kept and publishes on its timer
            time.sleep(2 * SHIFT_PUBLISH_SECONDS + 0.2)
        shift = next(stubs).DescribeModel(describe, timeout=10).shift
        shares = worker_shares(state) if state is not None else [count]
        for channel in channels:
            channel.close()
    return _result(stream, count, correct, shift, curve, workers, shares)


def _result(
    stream: Stream,
    requests: int,
    correct: int,
    shift: pb.ShiftMonitor,
    curve: list[tuple[int, float]],
    workers: int,
    shares: list[int],
) -> StreamResult:
    """What a stream did to the monitor (its state once the stream is sent), and the accuracy."""
    peaks = _ratios(shift, "peak")
    peak_layer = max(peaks, key=peaks.__getitem__)
    return StreamResult(
        name=stream.name,
        clean=stream.clean,
        requests=requests,
        alarm_at=int(shift.first_alarm_example),
        fired=list(shift.first_alarm),
        peak_ratio=peaks[peak_layer],
        peak_layer=peak_layer,
        accuracy=correct / requests,
        curve=curve,
        workers=workers,
        examples=int(shift.examples),
        worker_examples=sorted(shares, reverse=True),
    )


def test_split(model: Path) -> tuple[np.ndarray, np.ndarray]:
    """The digits test split the model was trained with (its metadata records the split)."""
    split = load_model(model, monitor=False).training.training_metrics.get("split", {})
    parts = split_dataset(
        load_dataset("digits"),
        int(split.get("seed", 0)),
        float(split.get("val_fraction", 0.15)),
        float(split.get("test_fraction", 0.2)),
    )
    return parts.test.features, parts.test.labels


def evaluate(args: argparse.Namespace) -> list[StreamResult]:
    """Every stream of the evaluation for `args.model`; prints progress to stderr."""
    model = Path(args.model)
    x, y = test_split(model)
    results = []
    for stream in digits_streams(x, y, seed=args.seed):
        if args.streams and stream.name not in args.streams:
            continue
        count = args.clean_requests if stream.clean else args.requests
        result = run_stream(model, stream, count, args)
        print(f"  {stream.name}: alarm at {result.alarm_at or '-'}", file=sys.stderr)
        results.append(result)
    return results


def run_shift_eval(args: argparse.Namespace, out=sys.stdout) -> int:
    """Run `foldserve shift-eval`. Returns 0, or 2 when the model cannot be served."""
    try:
        model = load_model(args.model)
    except ModelError as exc:
        print(f"foldserve shift-eval: {exc}", file=sys.stderr)
        return 2
    if model.shift is None:
        print(f"foldserve shift-eval: {args.model}: {model.shift_off}", file=sys.stderr)
        return 2
    results = evaluate(args)
    replays = false_alarms(Path(args.model), args.false_alarm_replay, args.seed)
    if args.format == "json":
        payload = {"streams": [asdict(r) for r in results], "false_alarms": replays}
        print(json.dumps(payload), file=out)
    else:
        print_table(f"{args.model} ({args.workers} worker(s))", results, out)
        print_false_alarms(replays, out)
    if args.plot:
        print(save_plot(results, Path(args.plot), title=str(args.model)), file=sys.stderr)
    return 0
