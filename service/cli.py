"""The `foldserve` command.

The serving half owns the command. Other installed parts add subcommands through the
`foldserve.commands` entry-point group (the training half registers `train` and `export` there), so
this module never imports torch or `training/`, and a serving-only install simply lacks them.
The serving subcommands (`serve`, `health`, `predict`, `bench`) skip loading those plugins
altogether, so a plugin that imports torch at module level cannot leak it into a server process.
Each subcommand imports its implementation lazily: `foldserve health` (a Docker HEALTHCHECK)
never pays for onnxruntime.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from importlib.metadata import entry_points

from service import defaults
from service.defaults import COMMAND, PLUGIN_GROUP
from service.tools.commands import add_fuzz, add_health, add_predict

Register = Callable[[argparse._SubParsersAction], None]

# What a shell reports for a command stopped by SIGINT (Ctrl-C) and by SIGPIPE: 128 + signal.
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141


def _register_plugins(subparsers: argparse._SubParsersAction) -> None:
    for entry in entry_points(group=PLUGIN_GROUP):
        try:
            register: Register = entry.load()
        except ImportError as exc:  # e.g. a serving-only install that lacks torch
            print(f"foldserve: command {entry.name!r} unavailable: {exc}", file=sys.stderr)
            continue
        register(subparsers)


def _serve(args: argparse.Namespace) -> int:
    from service.server.config import ConfigError, resolve

    try:
        config = resolve(args)
    except ConfigError as exc:
        print(f"foldserve serve: error: {exc}", file=sys.stderr)
        return 2
    from service.server.run import serve

    return serve(config)


def _bench(args: argparse.Namespace) -> int:
    from service.tools.bench import run_bench

    return run_bench(args)


def _add_serve(subparsers: argparse._SubParsersAction) -> None:
    from service.server.config import add_serve_arguments

    serve = subparsers.add_parser(
        "serve",
        help="serve a model file over gRPC (Predictor, KServe V2, health, reflection)",
        description="Serve one model file. Every flag also reads a FOLDSERVE_* variable; "
        "flags win. SIGTERM/SIGINT drain gracefully.",
    )
    add_serve_arguments(serve)
    serve.set_defaults(func=_serve)


def _add_bench(subparsers: argparse._SubParsersAction) -> None:
    bench = subparsers.add_parser("bench", help=BENCH_HELP, description=BENCH_DESCRIPTION)
    add = bench.add_argument
    add(
        "--model", default=f"{defaults.MODEL_DIR}/{defaults.MODEL_FILE}", help="model.onnx to serve"
    )
    add(
        "--bn-kept-model",
        metavar="PATH",
        help="the same network exported with its BatchNorms kept (bench/bn_kept_model.py "
        "makes one), timed against --model in onnxruntime alone",
    )
    add("--out", default=defaults.BENCH_OUT, help="directory for the results")
    add("--short", action="store_true", help="a few seconds of load (what make test runs)")
    _add_bench_load_flags(bench)
    bench.set_defaults(func=_bench)


def _add_bench_load_flags(bench: argparse.ArgumentParser) -> None:
    """How much load, in which shapes: each flag's default differs with --short."""
    from service.tools.bench.plan import int_list, positive_float, positive_int

    full, short = defaults.BENCH_FULL, defaults.BENCH_SHORT
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
        help=f"levels of calls in flight (default {listed(defaults.BENCH_IN_FLIGHT)})",
    )
    add(
        "--connections",
        type=positive_int,
        help=f"client connections carrying them (default {defaults.BENCH_CONNECTIONS})",
    )
    add(
        "--stream-messages",
        type=positive_int,
        help=f"examples per PredictStream {preset('stream_messages')}",
    )
    add(
        "--streams",
        type=positive_int,
        help=f"streams at once, 'several' (default {defaults.BENCH_STREAMS})",
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
    "Start the echo floor (canned replies on foldserve's server stack), a bare model server and "
    "foldserve (once per --workers count), each in its own process, and load them with h2load "
    "(nghttp2-client) in alternating rounds: sequential latency, throughput at each level of "
    "calls in flight, PredictStream, server and client CPU per call; then the folded vs the "
    "BN-kept model in onnxruntime alone. Writes JSON, a Markdown table of ratios to the echo "
    "floor and PNG plots (with matplotlib) to --out. Exit 1: something could not be measured "
    "(the rest was); 2: nothing could."
)


def _shift_eval(args: argparse.Namespace) -> int:
    from service.tools.shift_eval.run import run_shift_eval

    return run_shift_eval(args)


def _add_shift_eval(subparsers: argparse._SubParsersAction) -> None:
    evaluation = subparsers.add_parser(
        "shift-eval",
        help="stream clean and shifted digits through a server; when does its shift monitor alarm",
        description="Start a server of the model for each stream (the clean digits test split "
        "and shifted versions: intensity, noise, translation, flip, inversion, classes 0-4, "
        "heavy and light ink), send it one example per call, and print per stream: requests "
        "until the shift alarm, what fired, the highest score/threshold and the accuracy.",
    )
    evaluation.add_argument("--model", required=True, help="model.onnx (a digits model)")
    evaluation.add_argument("--requests", type=int, default=1000, help="per shifted stream")
    evaluation.add_argument("--clean-requests", type=int, default=5000, help="for the clean stream")
    evaluation.add_argument("--streams", nargs="*", help="only these streams (by name)")
    evaluation.add_argument(
        "--replay", type=int, default=0, help="also a long clean replay of N requests (a stream)"
    )
    evaluation.add_argument("--seed", type=int, default=0, help="stream order and noise")
    evaluation.add_argument(
        "--sample-every", type=int, default=10, help="read the live scores every N requests"
    )
    evaluation.add_argument(
        "--check-every",
        type=int,
        default=1,
        help="the servers' --shift-check-every (1: the exact request of the first alarm)",
    )
    evaluation.add_argument("--plot", help="write a PNG of the scores over requests here")
    evaluation.add_argument("--format", choices=("text", "json"), default="text")
    evaluation.set_defaults(func=_shift_eval)


# The subcommands of the serving half; running one of them loads no plugin.
SERVING_COMMANDS = {
    "serve": _add_serve,
    "health": add_health,
    "predict": add_predict,
    "bench": _add_bench,
    "fuzz": add_fuzz,
    "shift-eval": _add_shift_eval,
}


def _wanted_command(argv: Sequence[str]) -> str | None:
    return next((arg for arg in argv if not arg.startswith("-")), None)


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """Build the root parser; plugins are skipped when `argv` runs a serving subcommand."""
    parser = argparse.ArgumentParser(
        prog=COMMAND,
        description="Train BatchNorm networks, fold BN away, serve one example at a time "
        "over gRPC.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    if argv is None or _wanted_command(argv) not in SERVING_COMMANDS:
        _register_plugins(subparsers)
    for add in SERVING_COMMANDS.values():
        add(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; each subcommand sets `func(args) -> int` on its parser.

    Returns:
        The subcommand's exit code; 130 after Ctrl-C (one line "interrupted" on stderr) and 141
        when stdout's reader went away (`foldserve predict | head -1`), without a traceback.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = build_parser(argv).parse_args(argv)
        code = int(args.func(args) or 0)
        # Flush here, not at interpreter exit, so a closed pipe is caught below.
        sys.stdout.flush()
        return code
    except KeyboardInterrupt:
        name = " ".join(filter(None, (COMMAND, _wanted_command(argv))))
        print(f"{name}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # Python flushes stdout again at exit and would report the same broken pipe there.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_BROKEN_PIPE


if __name__ == "__main__":
    sys.exit(main())
