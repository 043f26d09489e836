"""foldserve under different `serve` flags, side by side with the echo floor, at chosen loads.

    .venv/bin/python bench/serve_ab.py --model models/default/model.onnx \
        --variant asyncio="--event-loop asyncio" --variant uvloop="--event-loop uvloop" \\
        --in-flight 1,32,64

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
from foldserve.core.loading import load_model


def _specs(
    model: str,
    variants: dict[str, str],
    peers: dict[str, str],
    limit: int,
    echoes: list[str] = (),
) -> list[servers.ServerSpec]:
    python = sys.executable
    limits = ("--max-concurrent-rpcs", str(limit))
    local = ("--model", str(Path(model).resolve()), "--host", "127.0.0.1", "--port", "0")
    local += ("--metrics-port", "0", "--workers", "1", *limits)
    here = (*local, "--http-port", "0")
    echo = (python, "-m", "foldserve.bench.baselines.echo", *limits)
    specs = [servers.ServerSpec("echo", echo)]
    specs += [
        servers.ServerSpec(f"echo-{runtime}", (*echo, "--runtime", runtime)) for runtime in echoes
    ]
    for name, flags in variants.items():
        env, words = _environment(flags)
        serve = (python, "-m", "foldserve.cli", "serve", *here)
        specs.append(servers.ServerSpec(name, (*env, *serve, *words)))
    for name, command in peers.items():
        env, words = _environment(command)
        specs.append(servers.ServerSpec(name, (*env, *words, *local)))
    return specs


def _environment(text: str) -> tuple[tuple[str, ...], list[str]]:
    """Leading VAR=VALUE words set the environment (through env(1), which execs)."""
    words = shlex.split(text)
    env = [w for w in words if "=" in w and not w.startswith("-")]
    return (("env", *env) if env else ()), [w for w in words if w not in env]


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
    peers = dict(v.split("=", 1) for v in args.peer)
    spec = load_model(args.model).require_classifier()
    predict = unary_workloads(spec)["Predict"]
    stream = stream_workload(spec, args.stream_messages)
    work = [(name, predict, load) for name, load in _loads(args).items()]
    if args.sequential:
        work.insert(0, ("sequential", predict, Load(calls=args.sequential)))
    if args.stream:
        work.append(("1 PredictStream", stream, Load(calls=1)))
    figures: dict[tuple[str, str, str], list[float]] = {}
    with (
        tempfile.TemporaryDirectory() as scratch,
        servers.start_all(
            _specs(args.model, variants, peers, 128, args.echo_runtime), Path(scratch)
        ) as running,
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
                        replies[workload.name]
                        if name.startswith("echo")
                        else sizes[(name, workload.name)]
                    )
                    target = server.target_for(workload)
                    if load.duration or load.calls:
                        warm = Load(
                            duration=0.25, connections=load.connections, streams=load.streams
                        )
                        warm_up(generator, target, workload, size, warm)
                    measured = measure(generator, server, target, workload, size, load)
                    if measured.error:
                        print(f"{label} {name}: {measured.error}", file=sys.stderr)
                    got = measured.figures
                    rate = got.get("examples_per_s") or 0.0
                    cpu = got.get("server_cpu_us_per_example") or 0.0
                    figures.setdefault((label, name, "rate"), []).append(rate)
                    figures.setdefault((label, name, "cpu"), []).append(cpu)
                    figures.setdefault((label, name, "p50"), []).append(got.get("p50_us") or 0.0)
    _print(figures, [label for label, _, _ in work], names, args.rounds, args.baseline)
    return 0


def _span(values: list[float]) -> str:
    if not values:
        return "–"
    return f"{statistics.median(values):,.2f} ({min(values):,.2f}–{max(values):,.2f})"


def _print(figures, labels, names, rounds: int, baseline: str | None) -> None:
    print(f"median (min–max) of {rounds} rounds; ratios to the echo floor taken round by round")
    for label in labels:
        for name in names:
            rate, cpu = figures[(label, name, "rate")], figures[(label, name, "cpu")]
            line = f"{label:16s} {name:10s} examples/s {_span(rate)}  CPU µs/example {_span(cpu)}"
            if label == "sequential":
                line += f"  p50 µs {_span(figures[(label, name, 'p50')])}"
            for base in ("echo", baseline):
                if base and name != base:
                    line += _ratios(figures, label, name, base)
            print(line)


def _ratios(figures, label: str, name: str, base: str) -> str:
    """`name`'s figures over `base`'s, round by round: rate, CPU and (sequential) p50."""
    shown = ("rate", "cpu", "p50") if label == "sequential" else ("rate", "cpu")
    parts = []
    for figure in shown:
        pairs = zip(figures[(label, name, figure)], figures[(label, base, figure)], strict=True)
        ratios = [a / b for a, b in pairs if b]
        parts.append(f"{figure} {_span(ratios)}")
    return f"  | /{base}: " + ", ".join(parts)


def _arguments() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="models/default/model.onnx")
    parser.add_argument("--variant", action="append", default=[], help="NAME=SERVE FLAGS")
    parser.add_argument(
        "--peer",
        action="append",
        default=[],
        help="NAME=COMMAND: another server's command line (another checkout's `serve`, say: "
        "'env --chdir DIR PYTHON -m service.cli serve'), given --model, --host, --port 0, "
        "--metrics-port 0, --workers 1 and --max-concurrent-rpcs",
    )
    parser.add_argument("--in-flight", default="32,64")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--duration", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--stream", action="store_true")
    parser.add_argument("--baseline", help="also print every figure over this server's")
    parser.add_argument(
        "--echo-runtime",
        action="append",
        default=[],
        choices=("aio", "uvloop"),
        help="also the echo floor on this runtime (the plain echo is sync)",
    )
    parser.add_argument(
        "--sequential", type=int, default=0, help="also N calls one at a time (p50 latency)"
    )
    parser.add_argument("--stream-messages", type=int, default=5000)
    return parser


if __name__ == "__main__":
    raise SystemExit(main())
