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
    _add_shift_arguments(train)
    train.set_defaults(func=_run_train)


def _add_model_flags(train: argparse.ArgumentParser) -> None:
    # These default to None (the model spec's own default applies), so the help names it.
    add = train.add_argument
    hidden, channels = (",".join(map(str, w)) for w in (defaults.MLP_HIDDEN, defaults.CNN_CHANNELS))
    add("--arch", choices=defaults.ARCHITECTURES, default=defaults.ARCH, help="network to train")
    add("--hidden", type=_widths, metavar="W,W", help=f"MLP hidden widths (default: {hidden})")
    add("--channels", type=_widths, metavar="C,C", help=f"CNN channels (default: {channels})")
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


def _add_export(subparsers: argparse._SubParsersAction) -> None:
    from service.tools.commands import DefaultsHelpFormatter

    export = subparsers.add_parser(
        "export",
        help="fold, export and verify model.onnx from a training checkpoint",
        formatter_class=DefaultsHelpFormatter,
        description="Rebuild a trained network from checkpoint.pt, fold its BatchNorms, export "
        "ONNX with metadata and verify it against the unfolded network.",
    )
    add = export.add_argument
    add("--checkpoint", type=Path, metavar="PATH", help="a train checkpoint.pt (or --module)")
    add("--out", type=Path, metavar="DIR", help="output folder (default: the checkpoint's folder)")
    add(
        "--model-version",
        metavar="V",
        help="version recorded in the model (default: the checkpoint's, else UTC time)",
    )
    _add_shift_arguments(export)
    export.set_defaults(func=_run_export)
    _add_module_arguments(export)


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
            "foldserve: training needs the train extra (`make venv`, or "
            f"`pip install -e '.[train]'` in a checkout; foldserve is not on PyPI): {exc}"
        )
    return pipeline


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
    if args.module is not None or args.checkpoint is None:
        return _run_module_export(args)
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


# --- `foldserve export --module`: your own torch module (training/export_module.py) ----------


def _add_module_arguments(export: argparse.ArgumentParser) -> None:
    module = export.add_argument_group(
        "your own torch module, instead of --checkpoint (see training/export_module.py)"
    )
    module.add_argument(
        "--module",
        metavar="PACKAGE.MODULE:FACTORY",
        help="a callable (class or function, no arguments) returning the nn.Module, or a module "
        "instance; the current directory is importable",
    )
    module.add_argument("--weights", type=Path, help="state_dict saved with torch.save")
    module.add_argument(
        "--input-shape", type=_widths, help="one example's shape, no batch axis, e.g. 3,32,32"
    )
    labels = module.add_mutually_exclusive_group()
    labels.add_argument(
        "--class-labels", type=lambda text: tuple(text.split(",")), help="e.g. cat,dog,bird"
    )
    labels.add_argument("--class-labels-file", type=Path, help="one class label per line")
    module.add_argument(
        "--check-inputs", type=Path, help=".npy of examples [N, *shape] to verify on"
    )
    module.add_argument(
        "--allow-unfolded",
        action="store_true",
        help="export even if some BatchNorm cannot fold (kept as BatchNormalization nodes)",
    )


def _run_module_export(args: argparse.Namespace) -> int:
    if args.checkpoint is not None or args.module is None or args.input_shape is None:
        print(
            "foldserve export: give --checkpoint (a model foldserve trained), or --module, "
            "--input-shape and --out (your own torch module)",
            file=sys.stderr,
        )
        return 2
    if args.out is None:
        print("foldserve export: --module needs --out DIR", file=sys.stderr)
        return 2
    _import_training()
    from training import export_module
    from training.export import ExportError
    from training.fold import FoldError

    try:
        labels = args.class_labels
        if args.class_labels_file is not None:
            labels = export_module.read_class_labels(args.class_labels_file)
        check = args.check_inputs and export_module.load_check_inputs(args.check_inputs)
        export = export_module.export_torch_module(
            export_module.load_module(args.module, args.weights),
            args.out,
            args.input_shape,
            class_labels=labels,
            check_inputs=check,
            allow_unfolded=args.allow_unfolded,
            model_version=args.model_version,
            arch=args.module,
        )
    except (export_module.ModuleError, FoldError, ExportError) as exc:
        print(f"foldserve export: {exc}", file=sys.stderr)
        return 2
    _print_export(export)
    return 0
