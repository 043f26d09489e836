"""The measuring tools' subcommands of `foldserve`: `bench`, `fuzz`, `shift-eval` and
`repository-scale`.

Each is registered through the `foldserve.commands` entry points (pyproject.toml), so the serving
command never imports this package; each imports its implementation only when it runs.
"""

from __future__ import annotations

import argparse

from foldserve.bench.baselines.runtimes import DESCRIPTIONS, RUNTIMES
from foldserve.bench.suite.plan import (
    BASELINE_KINDS,
    BENCH_CONNECTIONS,
    BENCH_FULL,
    BENCH_IN_FLIGHT,
    BENCH_OUT,
    BENCH_SHORT,
    BENCH_STREAMS,
    PEERS,
)
from foldserve.client.commands import TARGET, add_channel_arguments
from foldserve.contract.layout import MODEL_DIR, MODEL_FILE
from foldserve.server.config import MAX_MESSAGE_BYTES


def register_bench(subparsers: argparse._SubParsersAction) -> None:
    """Add `foldserve bench`."""
    _add_bench(subparsers)


def register_fuzz(subparsers: argparse._SubParsersAction) -> None:
    """Add `foldserve fuzz`."""
    add_fuzz(subparsers)


def register_chaos(subparsers: argparse._SubParsersAction) -> None:
    """Add `foldserve chaos`."""
    from foldserve.bench.chaos.run import add_arguments

    chaos = subparsers.add_parser(
        "chaos",
        help="faults and attacks under load against a real server: one row per fault, PASS/FAIL",
        description="Start `foldserve serve --workers 2` on 127.0.0.1 for each fault, keep "
        "--in-flight calls going over gRPC or V2 REST, and strike: SIGKILL of a worker "
        "(directly and behind HAProxy with deploy/balancer/haproxy.cfg's retry settings), idle "
        "connections, slow senders, HTTP/2 rapid reset, PING/SETTINGS floods and their HTTP/1.1 "
        "twins, 1,000 version reloads and 100 model load/unload cycles, a repository's files "
        "broken under the server, shared memory misused. Prints one row per fault: calls, "
        "errors by status, what the client saw, recovery, resident memory before and after, the "
        "bound and PASS/FAIL. Exit 1: a row missed its bound.",
    )
    add_arguments(chaos)
    chaos.set_defaults(func=_chaos)


def _chaos(args: argparse.Namespace) -> int:
    from foldserve.bench.chaos.run import run_chaos

    return run_chaos(args)


def register_repository_scale(subparsers: argparse._SubParsersAction) -> None:
    """Add `foldserve repository-scale`."""
    _add_repository_scale(subparsers)


def _bench(args: argparse.Namespace) -> int:
    from foldserve.bench.suite import run_bench

    return run_bench(args)


def _add_bench(subparsers: argparse._SubParsersAction) -> None:
    bench = subparsers.add_parser("bench", help=BENCH_HELP, description=BENCH_DESCRIPTION)
    add = bench.add_argument
    add("--model", default=f"{MODEL_DIR}/{MODEL_FILE}", help="model.onnx to serve")
    add(
        "--bn-kept-model",
        metavar="PATH",
        help="the same network exported with its BatchNorms kept (bench/bn_kept_model.py "
        "makes one), timed against --model in onnxruntime alone",
    )
    add("--out", default=BENCH_OUT, help="directory for the results")
    add("--short", action="store_true", help="a few seconds of load (what make test runs)")
    _add_bench_load_flags(bench)
    _add_bench_server_flags(bench)
    bench.set_defaults(func=_bench)


def _add_bench_server_flags(bench: argparse.ArgumentParser) -> None:
    """Which servers stand beside foldserve: the baselines, their runtimes, a peer."""
    from foldserve.bench.suite.plan import choices

    full, short = BENCH_FULL, BENCH_SHORT
    add = bench.add_argument
    add(
        "--baselines",
        type=choices(BASELINE_KINDS, none=True),
        help="baseline servers, each on every --runtimes: echo (canned replies), bare (the "
        f"model, nothing else), or none (default {','.join(full['baselines'])}; --short "
        f"{','.join(short['baselines'])})",
    )
    runtimes = "; ".join(f"{name}: {text}" for name, text in DESCRIPTIONS.items())
    add(
        "--runtimes",
        type=choices(RUNTIMES),
        help=f"the runtimes the baselines run on ({runtimes}) (default "
        f"{','.join(full['runtimes'])}; --short {','.join(short['runtimes'])})",
    )
    add(
        "--peer",
        choices=PEERS,
        help="also measure another model server on the same model, client and V2 workloads, "
        "installed on first use in a venv of its own under the cache directory",
    )
    add(
        "--peer-cache",
        metavar="DIR",
        help="where the peer's venv lives (default $XDG_CACHE_HOME or ~/.cache, /foldserve/peers)",
    )


def _add_bench_load_flags(bench: argparse.ArgumentParser) -> None:
    """How much load, in which shapes: each flag's default differs with --short."""
    from foldserve.bench.suite.plan import int_list, positive_float, positive_int

    full, short = BENCH_FULL, BENCH_SHORT
    add = bench.add_argument

    def preset(name: str) -> str:
        return f"(default {full[name]}; --short {short[name]})"

    def listed(values) -> str:
        return ",".join(map(str, values))

    add("--rounds", type=positive_int, help=f"alternating rounds {preset('rounds')}")
    add("--calls", type=positive_int, help=f"sequential calls per round {preset('calls')}")
    add("--warmup", type=positive_int, help=f"untimed calls before each {preset('warmup')}")
    add(
        "--duration",
        type=positive_float,
        help=f"seconds per level of calls in flight {preset('duration')}",
    )
    add(
        "--in-flight",
        type=int_list,
        help=f"levels of calls in flight (default {listed(BENCH_IN_FLIGHT)})",
    )
    add(
        "--connections",
        type=positive_int,
        help=f"client connections carrying them (default {BENCH_CONNECTIONS})",
    )
    add(
        "--stream-messages",
        type=positive_int,
        help=f"examples per PredictStream {preset('stream_messages')}",
    )
    add(
        "--streams",
        type=positive_int,
        help=f"streams at once, 'several' (default {BENCH_STREAMS})",
    )
    add(
        "--workers",
        type=int_list,
        help="foldserve worker counts to compare, e.g. 1,2 (--workers N is passed for N > 1) "
        f"(default {listed(full['workers'])}; --short {listed(short['workers'])})",
    )
    add("--h2load", metavar="PATH", help="the h2load executable (default: on PATH)")


BENCH_HELP = "the benchmark suite: echo floor, bare model server and foldserve side by side"
BENCH_DESCRIPTION = (
    "Start the echo floor (canned replies) and a bare model server on each Python gRPC runtime "
    "(sync, asyncio, uvloop), foldserve (once per --workers count) and, with --peer, another "
    "model server, each in its own process, and load them with h2load (nghttp2-client; HTTP/1.1 "
    "for V2 REST) in alternating rounds: sequential latency, throughput at each level of calls "
    "in flight, PredictStream, server and client CPU per call; then the folded vs the BN-kept "
    "model in onnxruntime alone. Writes JSON, a Markdown report of ratios to the fastest echo "
    "(and to the peer) and PNG plots (with matplotlib) to --out. Exit 1: something could not be "
    "measured (the rest was); 2: nothing could."
)


def _fuzz(args: argparse.Namespace) -> int:
    from foldserve.bench.fuzz.run import run_fuzz

    return run_fuzz(args)


def add_fuzz(subparsers: argparse._SubParsersAction) -> None:
    fuzz = subparsers.add_parser(
        "fuzz",
        help="send seeded odd requests to a server; check every answer keeps the contract",
        description="Send seeded requests to every RPC of both APIs (good ones, ones with odd "
        "fields, bytes that are barely protobuf) and check each answer against an oracle of "
        "valid calls: OK for valid ones, a refusal (INVALID_ARGUMENT, NOT_FOUND, ...) for the "
        "rest, never INTERNAL/UNKNOWN, no hang, good calls that keep their answers. Prints the "
        "calls tried and the statuses seen; exits 1 on any break.",
    )
    fuzz.add_argument("--target", default=TARGET, help="host:port of the server")
    fuzz.add_argument("--calls", type=int, default=2000, help="calls to send")
    fuzz.add_argument("--seed", type=int, default=0, help="seed of the request generator")
    fuzz.add_argument("--timeout", type=float, default=5.0, help="seconds per call (a hang)")
    fuzz.add_argument(
        "--max-message-bytes",
        type=int,
        default=MAX_MESSAGE_BYTES,
        help="the server's --max-message-bytes",
    )
    add_channel_arguments(fuzz)
    fuzz.set_defaults(func=_fuzz)


def _repository_scale(args: argparse.Namespace) -> int:
    from foldserve.bench.repository_scale import run

    return run(args)


def _add_repository_scale(subparsers: argparse._SubParsersAction) -> None:
    scale = subparsers.add_parser(
        "repository-scale",
        help="many small models and large model-zoo graphs: load time, memory, calls/s",
        description="Write a repository of small MLPs and materialize model-zoo graphs of the "
        "onnx package (random weights), serve them with foldserve serve --model-repository, "
        "and print Markdown tables over --rounds rounds (median, min–max): each model's "
        "RepositoryModelLoad time and the resident memory it adds, the time until a repository "
        "is ready, and V2 calls/s and latency on one model and spread over all of them. "
        "Exit 1: a call failed or a model never answered.",
    )
    from foldserve.bench.scale_options import add_arguments

    add_arguments(scale)
    scale.set_defaults(func=_repository_scale)
