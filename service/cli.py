"""The `foldserve` command.

The serving half owns the command and its serving subcommands (`serve`, `health`, `predict`).
Every other subcommand is an entry point of the `foldserve.commands` group, one per command name:
the training half's (`train`, `export`, `fold`, `lab`) and the measuring tools' (`bench`,
`fuzz`, `shift-eval`). So this module never imports torch, `training` or `bench`, and a
serving-only install simply lacks them. Running a command loads at most its own entry point (all
of them only for the top-level help), so a plugin that imports torch at module level cannot leak
it into a server process. Each subcommand imports its implementation lazily: `foldserve health`
(a Docker HEALTHCHECK) never pays for onnxruntime.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from importlib.metadata import entry_points

COMMAND = "foldserve"
# Entry-point group through which installed parts (the training half) add subcommands.
PLUGIN_GROUP = f"{COMMAND}.commands"


Register = Callable[[argparse._SubParsersAction], None]

# What a shell reports for a command stopped by SIGINT (Ctrl-C) and by SIGPIPE: 128 + signal.
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141


def _register_plugins(subparsers: argparse._SubParsersAction, wanted: str | None) -> None:
    """Register the plugin named `wanted`, or every plugin when no installed one has that name."""
    found = entry_points(group=PLUGIN_GROUP)
    named = [entry for entry in found if entry.name == wanted]
    for entry in named or found:
        try:
            register: Register = entry.load()
        except ImportError as exc:  # e.g. a serving-only install that lacks torch
            print(f"foldserve: command {entry.name!r} unavailable: {exc}", file=sys.stderr)
            continue
        register(subparsers)


def _serve(args: argparse.Namespace) -> int:
    from foldserve.server.config import ConfigError, resolve

    try:
        config = resolve(args)
    except ConfigError as exc:
        print(f"foldserve serve: error: {exc}", file=sys.stderr)
        return 2
    from foldserve.server.run import serve

    return serve(config)


def _add_serve(subparsers: argparse._SubParsersAction) -> None:
    from foldserve.server.config import add_serve_arguments

    serve = subparsers.add_parser(
        "serve",
        help="serve models over gRPC and HTTP/REST (Predictor, KServe V2 with Triton's "
        "extensions, health, reflection)",
        description="Serve a model file, a model's directory of versions, or a repository of "
        "models. Every flag also reads a FOLDSERVE_* variable; flags win. SIGTERM/SIGINT drain "
        "gracefully.",
    )
    add_serve_arguments(serve)
    serve.set_defaults(func=_serve)


def _add_health(subparsers: argparse._SubParsersAction) -> None:
    from foldserve.client.commands import add_health

    add_health(subparsers)


def _add_predict(subparsers: argparse._SubParsersAction) -> None:
    from foldserve.client.commands import add_predict

    add_predict(subparsers)


# The subcommands of the serving half; running one of them loads no plugin, and registers only
# itself (`foldserve serve` imports nothing of the client).
SERVING_COMMANDS = {"serve": _add_serve, "health": _add_health, "predict": _add_predict}


def _wanted_command(argv: Sequence[str]) -> str | None:
    return next((arg for arg in argv if not arg.startswith("-")), None)


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """Build the root parser; plugins are skipped when `argv` runs a serving subcommand."""
    parser = argparse.ArgumentParser(
        prog=COMMAND,
        description="Train BatchNorm networks, fold BN away, serve ONNX models over gRPC and "
        "HTTP/REST.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    wanted = None if argv is None else _wanted_command(argv)
    if wanted in SERVING_COMMANDS:
        SERVING_COMMANDS[wanted](subparsers)
        return parser
    _register_plugins(subparsers, wanted)
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
