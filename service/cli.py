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
import sys
from collections.abc import Callable, Sequence
from importlib.metadata import entry_points

from service import defaults
from service.defaults import COMMAND, PLUGIN_GROUP

Register = Callable[[argparse._SubParsersAction], None]


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


def _health(args: argparse.Namespace) -> int:
    from service.tools.health_probe import check

    return check(args.target, args.service, args.timeout)


def _predict(args: argparse.Namespace) -> int:
    from service.tools.client import run_predict

    return run_predict(args)


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


def _add_health(subparsers: argparse._SubParsersAction) -> None:
    health = subparsers.add_parser(
        "health",
        help="exit 0 iff the server's gRPC health check says SERVING",
        description="Ask a server's standard gRPC health service (grpc.health.v1) once: exit 0 "
        "when it answers SERVING, 1 otherwise, with the reason on stderr. The container "
        "HEALTHCHECK runs this.",
    )
    health.add_argument("--target", default=defaults.TARGET, help="host:port of the server")
    health.add_argument("--service", default="", help="service name to check ('' = the server)")
    health.add_argument(
        "--timeout",
        type=float,
        default=defaults.HEALTH_TIMEOUT_SECONDS,
        help="seconds to wait for an answer",
    )
    health.set_defaults(func=_health)


def _add_predict(subparsers: argparse._SubParsersAction) -> None:
    predict = subparsers.add_parser(
        "predict",
        help="send examples to a server one at a time; print predictions or a summary",
        description="Send examples one at a time. --data: 'digits' (default: its test split, "
        "as recorded in the model's training metrics), a .csv/.npz file, or '-' for JSON on "
        "stdin: a list of examples, or one example per line; an example is a list of numbers "
        'or {"features": [...], "label": <class label or index>} (label optional).',
    )
    predict.add_argument("--target", default=defaults.TARGET, help="host:port of the server")
    predict.add_argument("--data", default=defaults.DIGITS, help="digits, FILE.csv, FILE.npz or -")
    predict.add_argument(
        "--label-column", default=defaults.LABEL_COLUMN, help="label column of a CSV file"
    )
    predict.add_argument(
        "--split",
        choices=("test", "val", "train", "all"),
        default=None,
        help="which part of the data to send (default: test for digits, all for files); the "
        "split is the one the model was trained with",
    )
    predict.add_argument("--summary", action="store_true", help="print accuracy and latency only")
    predict.add_argument(
        "--format", choices=("text", "json"), default="text", help="summary as text or JSON"
    )
    predict.add_argument("--limit", type=int, default=None, help="send at most this many")
    predict.add_argument(
        "--timeout", type=float, default=defaults.PREDICT_TIMEOUT_SECONDS, help="seconds per call"
    )
    predict.add_argument("--model-name", default="", help="model name to request ('' = any)")
    predict.set_defaults(func=_predict)


def _add_bench(subparsers: argparse._SubParsersAction) -> None:
    bench = subparsers.add_parser(
        "bench",
        help="measure sequential latency: bare gRPC echo servers vs foldserve Predict",
        description="Start an echo server (sync and asyncio), a bare model server and foldserve, "
        "each in its own process, time sequential Predict calls to them in alternating blocks, "
        "and print p50/p99 per run and the medians, with ratios taken run by run.",
    )
    bench.add_argument("--model", required=True, help="model.onnx to serve")
    bench.add_argument("--calls", type=int, default=2000, help="sequential calls per run")
    bench.add_argument("--runs", type=int, default=5, help="runs (the median is reported)")
    bench.add_argument("--warmup", type=int, default=300, help="untimed calls before each run")
    bench.set_defaults(func=_bench)


def _fuzz(args: argparse.Namespace) -> int:
    from service.tools.fuzz.run import run_fuzz

    return run_fuzz(args)


def _add_fuzz(subparsers: argparse._SubParsersAction) -> None:
    fuzz = subparsers.add_parser(
        "fuzz",
        help="send seeded odd requests to a server; check every answer keeps the contract",
        description="Send seeded requests to every RPC of both APIs (good ones, ones with odd "
        "fields, bytes that are barely protobuf) and check each answer against an oracle of "
        "valid calls: OK for valid ones, a refusal (INVALID_ARGUMENT, NOT_FOUND, ...) for the "
        "rest, never INTERNAL/UNKNOWN, no hang, good calls that keep their answers. Prints the "
        "calls tried and the statuses seen; exits 1 on any break.",
    )
    fuzz.add_argument("--target", default=defaults.TARGET, help="host:port of the server")
    fuzz.add_argument("--calls", type=int, default=2000, help="calls to send")
    fuzz.add_argument("--seed", type=int, default=0, help="seed of the request generator")
    fuzz.add_argument("--timeout", type=float, default=5.0, help="seconds per call (a hang)")
    fuzz.add_argument(
        "--max-message-bytes",
        type=int,
        default=defaults.MAX_MESSAGE_BYTES,
        help="the server's --max-message-bytes",
    )
    fuzz.set_defaults(func=_fuzz)


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
    "health": _add_health,
    "predict": _add_predict,
    "bench": _add_bench,
    "fuzz": _add_fuzz,
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
    """Run the command line; each subcommand sets `func(args) -> int` on its parser."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
