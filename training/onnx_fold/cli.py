"""`foldserve fold IN.onnx OUT.onnx`, registered into the `foldserve` command.

Registration imports nothing heavy; running it imports onnx, numpy and onnxruntime, never torch,
so it works in an install without the training extra's torch.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from foldserve.training.defaults import ONNX_FOLD_BATCH, ONNX_FOLD_DIM, ONNX_FOLD_SEED


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `fold` to the root parser."""
    fold = subparsers.add_parser(
        "fold",
        help="fold BatchNormalization into the neighbouring layers of any ONNX file",
        description="Fold every inference-mode BatchNormalization of an ONNX file into a "
        "neighbouring Conv/ConvTranspose/Gemm/MatMul, verify the result against the input in "
        "onnxruntime on random inputs, record the folded BN statistics in the file's metadata "
        "and write it. BNs that cannot fold exactly are left, with the reason. Exit 0 when "
        "written, 2 on an error (nothing is written then).",
    )
    fold.add_argument("input", type=Path, metavar="IN.onnx")
    fold.add_argument("output", type=Path, metavar="OUT.onnx")
    fold.add_argument(
        "--input-shape",
        action="append",
        default=[],
        type=_named_shape,
        metavar="[NAME=]D0,D1,...",
        help="shape of a graph input's random verification values (repeatable; the name may be "
        "left out for a graph with one input); otherwise a symbolic dimension is "
        f"{ONNX_FOLD_BATCH} on axis 0 and {ONNX_FOLD_DIM} elsewhere",
    )
    fold.add_argument(
        "--copy-if-nothing-to-fold",
        action="store_true",
        help="for a file without BatchNormalization, write a copy instead of failing",
    )
    fold.add_argument("--seed", type=int, default=ONNX_FOLD_SEED, help="seed of the random inputs")
    fold.set_defaults(func=_run_fold)


def _named_shape(text: str) -> tuple[str, tuple[int, ...]]:
    name, _, dims = text.rpartition("=")
    try:
        shape = tuple(int(d) for d in dims.split(","))
    except ValueError:
        shape = ()
    if not shape or min(shape) < 1:
        raise argparse.ArgumentTypeError(f"expected [NAME=]D0,D1,... with positive D, got {text!r}")
    return name, shape


def _run_fold(args: argparse.Namespace) -> int:
    from foldserve.training.onnx_fold import OnnxFoldError, fold_file, format_report

    try:
        result = fold_file(
            args.input,
            args.output,
            copy_if_nothing_to_fold=args.copy_if_nothing_to_fold,
            shapes=dict(args.input_shape),
            seed=args.seed,
        )
    except OnnxFoldError as exc:
        print(f"foldserve fold: {exc}", file=sys.stderr)
        return 2
    if not result.bn_before:
        print(f"{args.input} has no BatchNormalization node; copied it to {args.output}")
    else:
        print(format_report(result, str(args.input)))
    return 0
