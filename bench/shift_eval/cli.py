"""`foldserve shift-eval`: when does a model's shift monitor alarm, stream by stream (and, with
`--adapt`, what adapting the model to each stream is worth)."""

from __future__ import annotations

import argparse
import sys


def register_shift_eval(subparsers: argparse._SubParsersAction) -> None:
    """Add `foldserve shift-eval`."""
    _add_shift_eval(subparsers)


def _shift_eval(args: argparse.Namespace) -> int:
    if args.adapt:
        from foldserve.bench.shift_eval.adapt import run_adapt_eval

        return run_adapt_eval(args)
    if len(args.model) != 1:
        print("foldserve shift-eval: one --model, unless --adapt", file=sys.stderr)
        return 2
    from foldserve.bench.shift_eval.run import run_shift_eval

    args.model = args.model[0]
    return run_shift_eval(args)


def _add_shift_eval(subparsers: argparse._SubParsersAction) -> None:
    evaluation = subparsers.add_parser(
        "shift-eval",
        help="stream clean and shifted digits through a server; when does its shift monitor alarm",
        description="Start a server of the model for each stream (the clean digits test split "
        "and shifted versions: intensity, noise, translation, flip, inversion, classes 0-4, "
        "heavy and light ink), send it one example per call, and print per stream: requests "
        "until the shift alarm, what fired, the highest statistic/threshold and the accuracy; "
        "then replay the clean test split through the monitor alone and print its false "
        "alarms against the stated ARL.",
    )
    evaluation.add_argument(
        "--model", required=True, nargs="+",
        help="model.onnx (a digits model); with --adapt, several (seeds): a table each, then "
        "the worst per stream",
    )  # fmt: skip
    evaluation.add_argument(
        "--adapt", action="store_true",
        help="instead of serving: per stream, the accuracy of the model and of the model "
        "adapted (foldserve adapt) on the stream's first --adapt-examples (from the training "
        "and validation images, unlabeled), both scored on the shifted test split; with the "
        "adaptation's time and its label-free signals (agreement, mean entropy)",
    )  # fmt: skip
    evaluation.add_argument(
        "--adapt-examples", type=int, default=500, help="with --adapt: examples adapted on"
    )
    evaluation.add_argument("--requests", type=int, default=1000, help="per shifted stream")
    evaluation.add_argument("--clean-requests", type=int, default=5000, help="for the clean stream")
    evaluation.add_argument("--streams", nargs="*", help="only these streams (by name)")
    evaluation.add_argument(
        "--false-alarm-replay",
        type=int,
        default=1_000_000,
        help="clean examples replayed through the monitor alone (0: none)",
    )
    evaluation.add_argument(
        "--workers", type=int, default=1, help="the servers' worker processes (sharing a monitor)"
    )
    evaluation.add_argument("--seed", type=int, default=0, help="stream order and noise")
    evaluation.add_argument(
        "--sample-every", type=int, default=10, help="read the live scores every N requests"
    )
    evaluation.add_argument(
        "--check-every",
        type=int,
        help="the servers' --shift-check-every (default: theirs; the alarm's example is exact "
        "whatever it is)",
    )
    evaluation.add_argument("--plot", help="write a PNG of the scores over requests here")
    evaluation.add_argument("--format", choices=("text", "json"), default="text")
    evaluation.set_defaults(func=_shift_eval)
