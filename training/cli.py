"""`foldserve train` and `foldserve export`, registered into the `foldserve` command.

Registration imports nothing heavy: torch loads only when one of these subcommands runs, so the
serving subcommands stay torch-free even though this plugin is always registered.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from service import defaults
from training.cli_export import add_export, print_export
from training.cli_shared import add_shift_arguments, import_training, shift_config, widths


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the training subcommands to the root parser."""
    _add_train(subparsers)
    add_export(subparsers)


def _add_train(subparsers: argparse._SubParsersAction) -> None:
    from service.tools.commands import DefaultsHelpFormatter

    train = subparsers.add_parser(
        "train",
        help="fit a BN network, fold BN away, export and verify model.onnx",
        formatter_class=DefaultsHelpFormatter,
        description="Fit a BatchNorm network, recompute precise BN statistics, fold every BN into "
        "the neighbouring layers, and export a verified ONNX model with metadata. An existing "
        "model.onnx in --out is kept unless --overwrite is given. Under torchrun "
        "(torchrun --nproc-per-node N -m service.cli train ...) it trains data-parallel: "
        "--batch-size is the global batch, BN statistics are global, rank 0 writes the files.",
    )
    add = train.add_argument
    add("--data", default=defaults.DIGITS, metavar="SOURCE", help="'digits', a .csv or an .npz")
    add("--label-column", default=defaults.LABEL_COLUMN, metavar="NAME", help="CSV label column")
    _add_model_flags(train)
    _add_fit_flags(train)
    add("--model-version", metavar="V", help="version recorded in the model (default: UTC time)")
    add("--out", type=Path, default=Path(defaults.MODEL_DIR), metavar="DIR", help="output folder")
    add("--overwrite", action="store_true", help="replace an existing model.onnx in --out")
    add("--no-progress", action="store_true", help="no progress bar")
    add("--dry-run", action="store_true", help="one batch per epoch (smoke test)")
    add_shift_arguments(train)
    train.set_defaults(func=_run_train)


def _add_model_flags(train: argparse.ArgumentParser) -> None:
    # These default to None (the model spec's own default applies), so the help names it.
    add = train.add_argument
    hidden, channels = (",".join(map(str, w)) for w in (defaults.MLP_HIDDEN, defaults.CNN_CHANNELS))
    add("--arch", choices=defaults.ARCHITECTURES, default=defaults.ARCH, help="network to train")
    add("--hidden", type=widths, metavar="W,W", help=f"MLP hidden widths (default: {hidden})")
    add("--channels", type=widths, metavar="C,C", help=f"CNN channels (default: {channels})")
    add("--no-input-bn", action="store_true", help="no BN over the raw inputs")
    add(
        "--dropout",
        type=float,
        metavar="P",
        help=f"dropout after each hidden block (default: {defaults.DROPOUT})",
    )


def _add_fit_flags(train: argparse.ArgumentParser) -> None:
    epochs = ", ".join(f"{n} ({arch})" for arch, n in defaults.EPOCHS.items())
    train.add_argument(
        "--epochs",
        type=int,
        metavar="N",
        help=f"passes over the training split (default: {epochs})",
    )
    for flag, kind, default, metavar, text in (
        ("--batch-size", int, defaults.BATCH_SIZE, "N", "examples per training step"),
        ("--lr", float, defaults.LEARNING_RATE, "RATE", "peak learning rate (one-cycle schedule)"),
        ("--weight-decay", float, defaults.WEIGHT_DECAY, "W", "the optimizer's weight decay"),
        ("--seed", int, defaults.SPLIT_SEED, "N", "seed of the data split and of training"),
        ("--val-fraction", float, defaults.VAL_FRACTION, "F", "share of each class to validate on"),
        ("--test-fraction", float, defaults.TEST_FRACTION, "F", "share of each class to test on"),
    ):
        train.add_argument(flag, type=kind, default=default, metavar=metavar, help=text)
    train.add_argument(
        "--optimizer", choices=defaults.OPTIMIZERS, default=defaults.OPTIMIZER, help="optimizer"
    )
    train.add_argument(
        "--device", choices=defaults.DEVICES, default=defaults.DEVICE, help="where to train"
    )
    train.add_argument(
        "--moving-average-bn",
        action="store_true",
        help="keep BN's moving averages instead of recomputing precise statistics",
    )


def _would_overwrite(args: argparse.Namespace) -> bool:
    """True (message on stderr) when --out holds a model.onnx and --overwrite was not given."""
    existing = args.out / defaults.MODEL_FILE
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
    from training.data import DataError
    from training.export import ExportError
    from training.fold import FoldError
    from training.train import FitSettings

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
    epochs = args.epochs if args.epochs is not None else defaults.EPOCHS[args.arch]
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
