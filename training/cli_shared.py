"""What `foldserve train` and `foldserve export` share: the shift calibration flags, argument
types and the lazy import of the training code (torch loads only when a command runs)."""

from __future__ import annotations

import argparse
import sys

from foldserve.core.shift.settings import (
    SHIFT_HALF_LIFE,
    SHIFT_MARGIN,
    SHIFT_PRIOR_MARGIN,
    SHIFT_REPLAY,
)


def add_shift_arguments(parser: argparse.ArgumentParser) -> None:
    """The shift monitor's calibration settings, written into the model file."""
    group = parser.add_argument_group("covariate-shift calibration (a clean replay at export)")
    group.add_argument(
        "--shift-half-life", type=float, default=SHIFT_HALF_LIFE,
        help="examples after which an observation's weight has halved",
    )  # fmt: skip
    group.add_argument(
        "--shift-margin", type=float, default=SHIFT_MARGIN,
        help="layer thresholds: this times the clean replay's maximum",
    )  # fmt: skip
    group.add_argument(
        "--shift-prior-margin", type=float, default=SHIFT_PRIOR_MARGIN,
        help="class-prior threshold: this times its clean maximum",
    )  # fmt: skip
    group.add_argument(
        "--shift-replay", type=int, default=SHIFT_REPLAY,
        help="requests in the clean replay of the validation split",
    )  # fmt: skip


def shift_config(args: argparse.Namespace):
    from foldserve.training.calibrate import ShiftConfig

    return ShiftConfig(
        half_life=args.shift_half_life,
        margin=args.shift_margin,
        prior_margin=args.shift_prior_margin,
        replay=args.shift_replay,
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
