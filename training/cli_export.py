"""`foldserve export`: fold, export and verify a model from a training checkpoint, or from your own
torch module (`--module`, training/export_module.py)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from foldserve.training.cli_shared import add_shift_arguments, import_training, shift_config, widths


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `foldserve export` to the root parser."""
    from foldserve.client.commands import DefaultsHelpFormatter

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
    add_shift_arguments(export)
    export.set_defaults(func=_run_export)
    _add_module_arguments(export)


def print_export(export) -> None:
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
    if export.shift_reference is None:
        print("shift monitor: no reference (the checkpoint holds no reference sample)")
    else:
        from foldserve.core.shift.calibrate import reference_lines

        print("\n".join(reference_lines(export.shift_reference)))
    print(f"model card: {export.card_path}")


def _run_export(args: argparse.Namespace) -> int:
    if args.module is not None or args.checkpoint is None:
        return _run_module_export(args)
    pipeline = import_training()
    from foldserve.training.export import ExportError
    from foldserve.training.fold import FoldError

    if not args.checkpoint.is_file():
        print(f"foldserve export: checkpoint {args.checkpoint} does not exist", file=sys.stderr)
        return 2
    out = args.out or args.checkpoint.parent
    try:
        export = pipeline.export_checkpoint(
            args.checkpoint, out, args.model_version, shift_config(args)
        )
    except (FoldError, ExportError) as exc:
        print(f"foldserve export: {exc}", file=sys.stderr)
        return 2
    print_export(export)
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
        "--input-shape", type=widths, help="one example's shape, no batch axis, e.g. 3,32,32"
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
    import_training()
    from foldserve.training import export_module
    from foldserve.training.export import ExportError
    from foldserve.training.fold import FoldError

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
    print_export(export)
    return 0
