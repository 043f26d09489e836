"""foldserve under different `serve` flags, side by side with the echo floor, at chosen loads.

    .venv/bin/python bench/serve_ab.py --model models/default/model.onnx \
        --variant off="--batching off" --variant on="--batching on" --in-flight 32,64

(a variant's leading `VAR=VALUE` words set its environment)
Every variant is its own `foldserve serve` process (one worker), started together with the echo
floor; in each of `--rounds` rounds each server takes its turn at each load (the order rotates
round by round), loaded by h2load as `foldserve bench` loads them (`Predict`, 8 connections,
`--duration` seconds after a warm-up). It prints, per variant and load, the median and min–max
over the rounds of calls/s and server CPU µs per call, and of their ratios to the echo floor's
in the same round. `--stream` adds one `PredictStream` of `--stream-messages` examples.
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

from foldserve.bench.suite import h2load, servers
from foldserve.bench.suite.measure import Load, measure, warm_up
from foldserve.bench.suite.workloads import reply_bytes, stream_workload, unary_workloads
from foldserve.core.model import load_model


def _specs(model: str, variants: dict[str, str], limit: int) -> list[servers.ServerSpec]:
    python = sys.executable
    limits = ("--max-concurrent-rpcs", str(limit))
    local = ("--host", "127.0.0.1", "--port", "0", "--metrics-port", "0", "--workers", "1")
    specs = [servers.ServerSpec("echo", (python, "-m", "foldserve.bench.baselines.echo", *limits))]
    for name, flags in variants.items():
        words = shlex.split(flags)
        # Leading VAR=VALUE words set the variant's environment (through env(1), which execs).
        env = [w for w in words if "=" in w and not w.startswith("-")]
        words = [w for w in words if w not in env]
        serve = (python, "-m", "foldserve.cli", "serve", "--model", model, *local, *limits)
        prefix = ("env", *env) if env else ()
        specs.append(servers.ServerSpec(name, (*prefix, *serve, *words)))
    return specs


def _loads(args: argparse.Namespace) -> dict[str, Load]:
    loads = {}
    for level in (int(n) for n in args.in_flight.split(",")):
        connections = min(args.connections, level)
        loads[f"{level} in flight"] = Load(
            duration=args.duration, connections=connections, streams=level // connections
        )
    return loads


def main(argv: list[str] | None = None) -> int:
    args = _arguments().parse_args(argv)
    variants = dict(v.split("=", 1) for v in args.variant)
    spec = load_model(args.model).input
    predict = unary_workloads(spec)["Predict"]
    stream = stream_workload(spec, args.stream_messages)
    work = [(name, predict, load) for name, load in _loads(args).items()]
    if args.stream:
        work.append(("1 PredictStream", stream, Load(calls=1)))
    figures: dict[tuple[str, str, str], list[float]] = {}
    with (
        tempfile.TemporaryDirectory() as scratch,
        servers.start_all(_specs(args.model, variants, 128), Path(scratch)) as running,
    ):
        for name, server in running.items():
            if isinstance(server, servers.ServerStartError):
                raise SystemExit(f"{name}: {server}")
        generator = h2load.H2Load(h2load.find(), Path(scratch))
        replies = {w.name: reply_bytes(running["echo"].target, w) for _, w, _ in work}
        sizes = {
            (n, w.name): reply_bytes(s.target, w) for n, s in running.items() for _, w, _ in work
        }
        names = list(running)
        for round_ in range(args.rounds):
            order = names[round_ % len(names) :] + names[: round_ % len(names)]
            for label, workload, load in work:
                for name in order:
                    server = running[name]
                    size = (
                        sizes[(name, workload.name)] if name != "echo" else replies[workload.name]
                    )
                    if load.duration:
                        warm_up(
                            generator,
                            server,
                            workload,
                            size,
                            Load(duration=0.25, connections=load.connections, streams=load.streams),
                        )
                    got = measure(generator, server, workload, size, load).figures
                    rate = got.get("examples_per_s") or 0.0
                    cpu = got.get("server_cpu_us_per_example") or 0.0
                    figures.setdefault((label, name, "rate"), []).append(rate)
                    figures.setdefault((label, name, "cpu"), []).append(cpu)
    _print(figures, [label for label, _, _ in work], names, args.rounds)
    return 0


def _span(values: list[float]) -> str:
    return f"{statistics.median(values):,.2f} ({min(values):,.2f}–{max(values):,.2f})"


def _print(figures, labels, names, rounds: int) -> None:
    print(f"median (min–max) of {rounds} rounds; ratios to the echo floor taken round by round")
    for label in labels:
        for name in names:
            rate, cpu = figures[(label, name, "rate")], figures[(label, name, "cpu")]
            line = f"{label:16s} {name:10s} examples/s {_span(rate)}  CPU µs/example {_span(cpu)}"
            if name != "echo":
                echo_rate, echo_cpu = (
                    figures[(label, "echo", "rate")],
                    figures[(label, "echo", "cpu")],
                )
                r = [a / b for a, b in zip(rate, echo_rate, strict=True) if b]
                c = [a / b for a, b in zip(cpu, echo_cpu, strict=True) if b]
                line += f"  | /echo: rate {_span(r)}, CPU {_span(c)}"
            print(line)


def _arguments() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="models/default/model.onnx")
    parser.add_argument("--variant", action="append", required=True, help="NAME=SERVE FLAGS")
    parser.add_argument("--in-flight", default="32,64")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--duration", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--stream", action="store_true")
    parser.add_argument("--stream-messages", type=int, default=5000)
    return parser


if __name__ == "__main__":
    raise SystemExit(main())
