"""What `foldserve train`, `export` and `calibrate` share: the shift reference's flags, argument
types and the lazy import of the training code (torch loads only when a command runs)."""

from __future__ import annotations

import argparse
import sys

from foldserve.core.shift.settings import SHIFT_ARL, SHIFT_COMPONENTS, SHIFT_REPLAY


def add_shift_arguments(parser: argparse.ArgumentParser) -> None:
    """The shift monitor's reference settings, written with the reference."""
    group = parser.add_argument_group(
        'covariate-shift reference (docs: "How the shift monitor decides")'
    )
    group.add_argument(
        "--shift-arl", type=float, default=SHIFT_ARL,
        help="stated average run length between false alarms, in examples (split evenly over "
        "the tests)",
    )  # fmt: skip
    group.add_argument(
        "--shift-components", type=int, default=SHIFT_COMPONENTS,
        help="whitened principal components tested per layer (and of the model input)",
    )  # fmt: skip
    group.add_argument(
        "--shift-replay", type=int, default=SHIFT_REPLAY,
        help="clean examples replayed through the tests to check the stated ARL",
    )  # fmt: skip


def shift_config(args: argparse.Namespace):
    from foldserve.core.shift.calibrate import ShiftConfig

    if args.shift_arl <= 1 or args.shift_components < 0 or args.shift_replay < 0:
        sys.exit(
            "foldserve: --shift-arl must be above 1, --shift-components and --shift-replay >= 0"
        )
    return ShiftConfig(
        arl=args.shift_arl, components=args.shift_components, replay=args.shift_replay
    )


def widths(text: str) -> tuple[int, ...]:
    try:
        widths = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from None
    if not widths or min(widths) < 1:
        raise argparse.ArgumentTypeError(f"widths must be positive integers, got {text!r}")
    return widths


def import_training():
    try:
        from foldserve.training import pipeline
    except ImportError as exc:
        sys.exit(
            "foldserve: training needs the train extra (`make venv`, or "
            f"`pip install -e '.[train]'` in a checkout; foldserve is not on PyPI): {exc}"
        )
    return pipeline
