"""`foldserve train` and `foldserve export`, registered into the `foldserve` command.

Registration imports nothing heavy: torch loads only when one of these subcommands runs, so the
serving subcommands stay torch-free even though this plugin is always registered.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from foldserve.contract.data import DIGITS, LABEL_COLUMN, SPLIT_SEED, TEST_FRACTION, VAL_FRACTION
from foldserve.contract.layout import MODEL_DIR, MODEL_FILE
from foldserve.training.cli_export import print_export
from foldserve.training.cli_shared import add_shift_arguments, import_training, shift_config, widths
from foldserve.training.defaults import (
    ARCH,
    ARCHITECTURES,
    BATCH_SIZE,
    CNN_CHANNELS,
    DEVICE,
    DEVICES,
    DROPOUT,
    EPOCHS,
    LEARNING_RATE,
    MLP_HIDDEN,
    OPTIMIZER,
    OPTIMIZERS,
    WEIGHT_DECAY,
)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `foldserve train` to the root parser."""
    _add_train(subparsers)


def _add_train(subparsers: argparse._SubParsersAction) -> None:
    from foldserve.client.commands import DefaultsHelpFormatter

    train = subparsers.add_parser(
        "train",
        help="fit a BN network, fold BN away, export and verify model.onnx",
        formatter_class=DefaultsHelpFormatter,
        description="Fit a BatchNorm network, recompute precise BN statistics, fold every BN into "
        "the neighbouring layers, and export a verified ONNX model with metadata. An existing "
        "model.onnx in --out is kept unless --overwrite is given. Under torchrun "
        "(torchrun --nproc-per-node N -m foldserve.cli train ...) it trains data-parallel: "
        "--batch-size is the global batch, BN statistics are global, rank 0 writes the files.",
    )
    add = train.add_argument
    add("--data", default=DIGITS, metavar="SOURCE", help="'digits', a .csv or an .npz")
    add("--label-column", default=LABEL_COLUMN, metavar="NAME", help="CSV label column")
    _add_model_flags(train)
    _add_fit_flags(train)
    add("--model-version", metavar="V", help="version recorded in the model (default: UTC time)")
    add("--out", type=Path, default=Path(MODEL_DIR), metavar="DIR", help="output folder")
    add("--overwrite", action="store_true", help="replace an existing model.onnx in --out")
    add("--no-progress", action="store_true", help="no progress bar")
    add("--dry-run", action="store_true", help="one batch per epoch (smoke test)")
    add_shift_arguments(train)
    train.set_defaults(func=_run_train)


def _add_model_flags(train: argparse.ArgumentParser) -> None:
    # These default to None (the model spec's own default applies), so the help names it.
    add = train.add_argument
    hidden, channels = (",".join(map(str, w)) for w in (MLP_HIDDEN, CNN_CHANNELS))
    add("--arch", choices=ARCHITECTURES, default=ARCH, help="network to train")
    add("--hidden", type=widths, metavar="W,W", help=f"MLP hidden widths (default: {hidden})")
    add("--channels", type=widths, metavar="C,C", help=f"CNN channels (default: {channels})")
    add("--no-input-bn", action="store_true", help="no BN over the raw inputs")
    add(
        "--dropout",
        type=float,
        metavar="P",
        help=f"dropout after each hidden block (default: {DROPOUT})",
    )


def _add_fit_flags(train: argparse.ArgumentParser) -> None:
    epochs = ", ".join(f"{n} ({arch})" for arch, n in EPOCHS.items())
    train.add_argument(
        "--epochs",
        type=int,
        metavar="N",
        help=f"passes over the training split (default: {epochs})",
    )
    for flag, kind, default, metavar, text in (
        ("--batch-size", int, BATCH_SIZE, "N", "examples per training step"),
        ("--lr", float, LEARNING_RATE, "RATE", "peak learning rate (one-cycle schedule)"),
        ("--weight-decay", float, WEIGHT_DECAY, "W", "the optimizer's weight decay"),
        ("--seed", int, SPLIT_SEED, "N", "seed of the data split and of training"),
        ("--val-fraction", float, VAL_FRACTION, "F", "share of each class to validate on"),
        ("--test-fraction", float, TEST_FRACTION, "F", "share of each class to test on"),
    ):
        train.add_argument(flag, type=kind, default=default, metavar=metavar, help=text)
    train.add_argument("--optimizer", choices=OPTIMIZERS, default=OPTIMIZER, help="optimizer")
    train.add_argument("--device", choices=DEVICES, default=DEVICE, help="where to train")
    train.add_argument(
        "--moving-average-bn",
        action="store_true",
        help="keep BN's moving averages instead of recomputing precise statistics",
    )


def _would_overwrite(args: argparse.Namespace) -> bool:
    """True (message on stderr) when --out holds a model.onnx and --overwrite was not given."""
    existing = args.out / MODEL_FILE
    if not existing.exists() or args.overwrite:
        return False
    # The default --out is the model `make run` serves: never replace it by accident.
    print(
        f"foldserve train: {existing} already exists; pass --overwrite to replace it, "
        "or choose another --out",
        file=sys.stderr,
    )
    return True


def _run_train(args: argparse.Namespace) -> int:
    if _would_overwrite(args):
        return 2
    pipeline = import_training()
    from foldserve.training.data import DataError
    from foldserve.training.export import ExportError
    from foldserve.training.fold import FoldError
    from foldserve.training.train import FitSettings

    overrides = {
        key: value
        for key, value in {
            "hidden": args.hidden,
            "channels": args.channels,
            "dropout": args.dropout,
            "input_bn": False if args.no_input_bn else None,
        }.items()
        if value is not None
    }
    epochs = args.epochs if args.epochs is not None else EPOCHS[args.arch]
    config = pipeline.TrainConfig(
        data=args.data,
        label_column=args.label_column,
        arch=args.arch,
        out=args.out,
        batch_size=args.batch_size,
        seed=args.seed,
        device=args.device,
        val_fraction=args.val_fraction,
        test_fraction=args.test_fraction,
        precise_bn=not args.moving_average_bn,
        model_version=args.model_version,
        spec_overrides=overrides,
        fit=FitSettings(
            epochs=epochs,
            learning_rate=args.lr,
            optimizer=args.optimizer,
            weight_decay=args.weight_decay,
            progress=not args.no_progress,
            dry_run=args.dry_run,
        ),
        shift=shift_config(args),
    )
    try:
        result = pipeline.run_training(config)
    except (DataError, FoldError, ExportError, ValueError) as exc:
        print(f"foldserve train: {exc}", file=sys.stderr)
        return 2
    if result is not None:  # None: a worker other than rank 0 under torchrun, which reports
        _print_training_report(result)
    return 0


def _print_training_report(result) -> None:
    metrics = result.metrics
    before = metrics["moving_average_bn"]
    workers = metrics.get("workers", 1)
    on = f" on {workers} workers" if workers > 1 else ""
    print(f"trained {metrics['epochs']} epochs in {metrics['train_seconds']} s{on}")
    if metrics["precise_bn"]:
        print(
            f"precise BN statistics: val accuracy {before['val_accuracy']:.4f} -> "
            f"{metrics['val_accuracy']:.4f}, test accuracy {before['test_accuracy']:.4f} -> "
            f"{metrics['test_accuracy']:.4f}"
        )
        for change in metrics["bn_changes"]:
            print(
                f"  BN {change['layer']:>10}: moving mean off by "
                f"{change['mean_shift_max_std']:.4f} std (max), "
                f"{change['mean_shift_mean_std']:.4f} (mean); std ratio up to "
                f"{change['std_ratio_max']:.4f}"
            )
    print_export(result.export)
    print(f"validation accuracy: {metrics['val_accuracy']:.4f}")
    print(f"test accuracy: {metrics['test_accuracy']:.4f}")
