"""The flags of the client commands (`foldserve health`, `predict`, `fuzz`), TLS and token
included.

Nothing here imports grpc, numpy or onnxruntime: `foldserve health` (a Docker HEALTHCHECK) builds
this parser on every probe. Each command imports its implementation when it runs.
"""

from __future__ import annotations

import argparse
import sys

from foldserve.contract.data import DIGITS, LABEL_COLUMN
from foldserve.core.access import AUTH_TOKEN_ENV
from foldserve.server.config import PORT

TARGET = f"127.0.0.1:{PORT}"
PREDICT_TIMEOUT_SECONDS = 10.0
HEALTH_TIMEOUT_SECONDS = 3.0


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends "(default: X)" to a flag's help, except where there is nothing worth showing.

    Skipped: on/off flags, flags without a default (None; their help says what happens then),
    and help that already names its default.
    """

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        # `is`, not `in`: a default of 0 is worth showing, though 0 == False.
        nothing = action.default is None or action.default is False or action.default == ""
        if nothing or "default" in text:
            return text
        return super()._get_help_string(action)


def add_channel_arguments(parser: argparse.ArgumentParser) -> None:
    """The connection flags: TLS (server verified against a CA), a client certificate (mutual
    TLS) and a bearer token."""
    group = parser.add_argument_group("TLS and authentication")
    group.add_argument(
        "--tls", action="store_true", help="use TLS, verifying the server with the system's CAs"
    )
    group.add_argument(
        "--tls-ca",
        metavar="FILE",
        help="PEM CA certificates that signed the server's (implies --tls)",
    )
    group.add_argument(
        "--tls-cert",
        metavar="FILE",
        help="PEM client certificate, for a server that checks them (mutual TLS; implies --tls)",
    )
    group.add_argument("--tls-key", metavar="FILE", help="PEM private key of --tls-cert")
    group.add_argument(
        "--tls-server-name",
        metavar="NAME",
        help="the name the server's certificate must carry, when it differs from the target's "
        "host (e.g. 'localhost' while calling 127.0.0.1)",
    )
    group.add_argument(
        "--auth-token-file",
        metavar="FILE",
        help="send 'authorization: Bearer <token>' with the token in FILE (default: "
        f"${AUTH_TOKEN_ENV}, when set)",
    )


def _health(args: argparse.Namespace) -> int:
    from foldserve.client.channel import ChannelError, open_channel
    from foldserve.client.health_probe import check

    try:
        channel = open_channel(args)
    except ChannelError as exc:
        print(f"foldserve health: {exc}", file=sys.stderr)
        return 1
    return check(args.target, args.service, args.timeout, lambda: channel)


def _predict(args: argparse.Namespace) -> int:
    from foldserve.client.client import run_predict

    return run_predict(args)


def add_health(subparsers: argparse._SubParsersAction) -> None:
    health = subparsers.add_parser(
        "health",
        help="exit 0 iff the server's gRPC health check says SERVING",
        formatter_class=DefaultsHelpFormatter,
        description="Ask a server's standard gRPC health service (grpc.health.v1) once: exit 0 "
        "when it answers SERVING, 1 otherwise, with the reason on stderr. The container "
        "HEALTHCHECK runs this.",
    )
    health.add_argument("--target", default=TARGET, metavar="HOST:PORT", help="the server to ask")
    health.add_argument(
        "--service", default="", metavar="NAME", help="service to check (default: '', the server)"
    )
    health.add_argument(
        "--timeout",
        type=float,
        default=HEALTH_TIMEOUT_SECONDS,
        metavar="SECONDS",
        help="how long to wait for an answer",
    )
    add_channel_arguments(health)
    health.set_defaults(func=_health)


PREDICT_DESCRIPTION = (
    "Send examples one at a time. --data: 'digits' (its test split by default, "
    "as recorded in the model's training metrics), a .csv/.npz file, or '-' for JSON on "
    "stdin: a list of examples, or one example per line; an example is a list of numbers "
    'or {"features": [...], "label": "3"} (label optional). Labels are matched against '
    'the model\'s class labels as text: 3 and "3" both mean the class labelled "3", never '
    "the class at index 3. Before anything is sent, a label that matches no class, or an "
    "example whose feature count differs from the model's input, stops the run (exit 1)."
)


def add_predict(subparsers: argparse._SubParsersAction) -> None:
    predict = subparsers.add_parser(
        "predict",
        help="send examples to a server one at a time; print predictions or a summary",
        formatter_class=DefaultsHelpFormatter,
        description=PREDICT_DESCRIPTION,
    )
    predict.add_argument("--target", default=TARGET, metavar="HOST:PORT", help="the server to call")
    predict.add_argument(
        "--data", default=DIGITS, metavar="SOURCE", help="digits, FILE.csv, FILE.npz or -"
    )
    predict.add_argument(
        "--label-column",
        default=LABEL_COLUMN,
        metavar="NAME",
        help="label column of a CSV file",
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
    predict.add_argument(
        "--limit", type=int, default=None, metavar="N", help="send at most N (default: all)"
    )
    predict.add_argument(
        "--timeout",
        type=float,
        default=PREDICT_TIMEOUT_SECONDS,
        metavar="SECONDS",
        help="deadline of each call",
    )
    predict.add_argument(
        "--model-name",
        default="",
        metavar="NAME",
        help="model to request (default: '', whichever the server serves)",
    )
    add_channel_arguments(predict)
    predict.set_defaults(func=_predict)
