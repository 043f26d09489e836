"""`foldserve train` and `foldserve export`, registered into the `foldserve` command.

Registration imports nothing heavy: torch loads only when one of these subcommands runs, so the
serving subcommands stay torch-free even though this plugin is always registered.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from service import defaults


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the training subcommands to the root parser."""
    _add_train(subparsers)
    _add_export(subparsers)


def _add_shift_arguments(parser: argparse.ArgumentParser) -> None:
    """The shift monitor's calibration settings, written into the model file."""
    group = parser.add_argument_group("covariate-shift calibration (a clean replay at export)")
    group.add_argument(
        "--shift-half-life", type=float, default=defaults.SHIFT_HALF_LIFE,
        help="examples after which an observation's weight has halved",
    )  # fmt: skip
    group.add_argument(
        "--shift-margin", type=float, default=defaults.SHIFT_MARGIN,
        help="layer thresholds: this times the clean replay's maximum",
    )  # fmt: skip
    group.add_argument(
        "--shift-prior-margin", type=float, default=defaults.SHIFT_PRIOR_MARGIN,
        help="class-prior threshold: this times its clean maximum",
    )  # fmt: skip
    group.add_argument(
        "--shift-replay", type=int, default=defaults.SHIFT_REPLAY,
        help="requests in the clean replay of the validation split",
    )  # fmt: skip


def _shift_config(args: argparse.Namespace):
    from training.calibrate import ShiftConfig

    return ShiftConfig(
        half_life=args.shift_half_life,
        margin=args.shift_margin,
        prior_margin=args.shift_prior_margin,
        replay=args.shift_replay,
    )


def _add_train(subparsers: argparse._SubParsersAction) -> None:
    train = subparsers.add_parser(
        "train",
        help="fit a BN network, fold BN away, export and verify model.onnx",
        description="Fit a BatchNorm network, recompute precise BN statistics, fold every BN into "
        "the neighbouring layers, and export a verified ONNX model with metadata.",
    )
    train.add_argument(
        "--data", default=defaults.DIGITS, help="'digits' (built in), a .csv or an .npz"
    )
    train.add_argument(
        "--label-column", default=defaults.LABEL_COLUMN, help="CSV column holding the label"
    )
    train.add_argument("--arch", choices=defaults.ARCHITECTURES, default=defaults.ARCH)
    train.add_argument("--hidden", type=_widths, help="MLP hidden widths, e.g. 512,256")
    train.add_argument("--channels", type=_widths, help="CNN conv channels, e.g. 32,64")
    train.add_argument("--no-input-bn", action="store_true", help="no BN over the raw inputs")
    train.add_argument(
        "--dropout", type=float, help=f"dropout after each block (default {defaults.DROPOUT})"
    )
    epochs = ", ".join(f"{n} ({arch})" for arch, n in defaults.EPOCHS.items())
    train.add_argument("--epochs", type=int, default=None, help=f"default {epochs}")
    train.add_argument("--batch-size", type=int, default=defaults.BATCH_SIZE)
    train.add_argument(
        "--lr", type=float, default=defaults.LEARNING_RATE, help="peak learning rate (one-cycle)"
    )
    train.add_argument("--optimizer", choices=defaults.OPTIMIZERS, default=defaults.OPTIMIZER)
    train.add_argument("--weight-decay", type=float, default=defaults.WEIGHT_DECAY)
    train.add_argument("--seed", type=int, default=defaults.SPLIT_SEED)
    train.add_argument("--device", choices=defaults.DEVICES, default=defaults.DEVICE)
    train.add_argument("--val-fraction", type=float, default=defaults.VAL_FRACTION)
    train.add_argument("--test-fraction", type=float, default=defaults.TEST_FRACTION)
    train.add_argument(
        "--moving-average-bn",
        action="store_true",
        help="keep BN's moving averages instead of recomputing precise statistics",
    )
    train.add_argument("--model-version", help="version recorded in the model (default: UTC time)")
    train.add_argument(
        "--out", type=Path, default=Path(defaults.MODEL_DIR), help="output directory"
    )
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    train.add_argument("--dry-run", action="store_true", help="one batch per epoch (smoke test)")
    _add_shift_arguments(train)
    train.set_defaults(func=_run_train)


def _add_export(subparsers: argparse._SubParsersAction) -> None:
    export = subparsers.add_parser(
        "export",
        help="fold, export and verify model.onnx from a training checkpoint",
        description="Rebuild a trained network from checkpoint.pt, fold its BatchNorms, export "
        "ONNX with metadata and verify it against the unfolded network.",
    )
    export.add_argument("--checkpoint", type=Path, required=True)
    export.add_argument("--out", type=Path, help="output directory (default: the checkpoint's)")
    export.add_argument("--model-version", help="version recorded in the model")
    _add_shift_arguments(export)
    export.set_defaults(func=_run_export)


def _widths(text: str) -> tuple[int, ...]:
    try:
        widths = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from None
    if not widths or min(widths) < 1:
        raise argparse.ArgumentTypeError(f"widths must be positive integers, got {text!r}")
    return widths


def _import_training():
    try:
        from training import pipeline
    except ImportError as exc:
        sys.exit(
            f"foldserve: training needs the train extra (pip install 'foldserve[train]'): {exc}"
        )
    return pipeline


def _run_train(args: argparse.Namespace) -> int:
    pipeline = _import_training()
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
        shift=_shift_config(args),
    )
    try:
        result = pipeline.run_training(config)
    except (DataError, FoldError, ExportError, ValueError) as exc:
        print(f"foldserve train: {exc}", file=sys.stderr)
        return 2
    _print_training_report(result)
    return 0


def _print_training_report(result) -> None:
    metrics = result.metrics
    before = metrics["moving_average_bn"]
    print(f"trained {metrics['epochs']} epochs in {metrics['train_seconds']} s")
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
    _print_export(result.export)
    print(f"validation accuracy: {metrics['val_accuracy']:.4f}")
    print(f"test accuracy: {metrics['test_accuracy']:.4f}")


def _print_export(export) -> None:
    report = export.fold_report
    print(f"folded {len(report.folded)} BatchNorm layer(s):")
    for entry in report.folded:
        print(f"  {entry.layer} -> {entry.folded_into} ({entry.direction})")
    for entry in report.left:
        print(f"  left {entry.layer}: {entry.reason}")
    print(
        f"exported {export.model_path}: {export.bn_nodes} BatchNormalization nodes; "
        f"max |onnxruntime - torch| = {export.max_abs_error:.2e}; "
        f"alone vs in batch = {export.max_batch_error:.2e}"
    )
    print(f"taps: max |onnxruntime - unfolded torch BN| = {export.max_tap_error:.2e}")
    calibration = export.shift_calibration
    if calibration is None:
        print("shift monitor: not calibrated (the checkpoint holds no held-out examples)")
    else:
        print(
            f"shift monitor calibrated on {calibration.replay} requests of {calibration.data} "
            f"(half-life {calibration.half_life:g}, margins {calibration.margin:g} and "
            f"{calibration.prior_margin:g}):"
        )
        for layer in calibration.layers:
            sentinel = (
                f", sentinel over {len(layer.excluded)} unit(s) {layer.sentinel_threshold:.4g}"
                if layer.excluded
                else ""
            )
            print(f"  layer {layer.layer:>6}: threshold {layer.threshold:.4g}{sentinel}")
        print(f"  class prior: threshold {calibration.prior_threshold:.4g}")
    print(f"model card: {export.card_path}")


def _run_export(args: argparse.Namespace) -> int:
    pipeline = _import_training()
    from training.export import ExportError
    from training.fold import FoldError

    if not args.checkpoint.is_file():
        print(f"foldserve export: checkpoint {args.checkpoint} does not exist", file=sys.stderr)
        return 2
    out = args.out or args.checkpoint.parent
    try:
        export = pipeline.export_checkpoint(
            args.checkpoint, out, args.model_version, _shift_config(args)
        )
    except (FoldError, ExportError) as exc:
        print(f"foldserve export: {exc}", file=sys.stderr)
        return 2
    _print_export(export)
    card = json.loads(export.card_path.read_text())
    print(f"test accuracy (from training): {card['test_accuracy']:.4f}")
    return 0
