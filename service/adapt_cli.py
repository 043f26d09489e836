"""`foldserve adapt`: answer a covariate shift by re-estimating a model's BN statistics on a
sample of the new (unlabeled) inputs.

    foldserve adapt --model M.onnx --data stream.npz --out adapted/   # writes adapted/model.onnx

Torch-free and `onnx`-free (`foldserve.core.adapt`), so a serving install has it too. The
sample is read as `foldserve calibrate` reads one (`foldserve.samples`); labels, if it has any,
are ignored. The new file records what it was adapted from (`foldserve.adaptation`), its new
BN statistics and a shift reference fitted on the sample; a `config.json` beside the source is
copied beside it.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from foldserve.contract import CONFIG_FILE
from foldserve.contract.layout import MODEL_FILE


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `foldserve adapt` to the root parser."""
    from foldserve.client.commands import DefaultsHelpFormatter

    parser = subparsers.add_parser(
        "adapt",
        help="re-estimate a folded model's BN statistics on unlabeled inputs (a shifted stream) "
        "and write the adapted model",
        formatter_class=DefaultsHelpFormatter,
        description="Re-estimate every folded BatchNorm's mean and variance on a sample of "
        "unlabeled inputs, layer by layer, re-fold them into the weights, check the result and "
        f"write DIR/{MODEL_FILE}; its metadata records the source, the sample, the new "
        "statistics, a new shift reference, and how its predictions compare with the source's "
        "on the sample (agreement, mean entropy). Exit 0 when written, 2 on an error.",
    )
    add = parser.add_argument
    add("--model", type=Path, required=True, metavar="M.onnx", help="the folded model file")
    add(
        "--data", required=True, metavar="D",
        help="unlabeled inputs: a .csv (numeric columns; --label-column dropped if present), a "
        ".npz (X), a directory of .npy tensors (each one example or a batch), or `digits`",
    )  # fmt: skip
    add("--label-column", default="label", help="the CSV's label column, if it has one")
    add("--out", type=Path, required=True, metavar="DIR", help="where to write the model")
    add(
        "--examples", type=int, default=0, metavar="N",
        help="use the sample's first N examples (0: all of them)",
    )  # fmt: skip
    add(
        "--replay", type=int, default=0, metavar="N",
        help="check the new shift reference's stated ARL by replaying N draws of a held-out "
        "fifth of the sample (0: no check; it takes seconds to minutes)",
    )  # fmt: skip
    add("--no-reference", action="store_true", help="fit no new shift reference")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from foldserve.contract import ContractError
    from foldserve.core.adapt import AdaptError
    from foldserve.core.errors import ModelError
    from foldserve.datasets import DataError

    try:
        lines = adapt_file(args)
    except (AdaptError, ModelError, DataError, ContractError, OSError) as exc:
        print(f"foldserve adapt: {exc}", file=sys.stderr)
        return 2
    print("\n".join(lines))
    return 0


def adapt_file(args: argparse.Namespace) -> list[str]:
    """Adapt and write; what was done, as lines for the user."""
    from foldserve.core.adapt import AdaptError, adapt_model
    from foldserve.core.loading import load_model
    from foldserve.samples import read_sample

    model = load_model(args.model, monitor=False)
    if model.classifier is None:
        raise AdaptError(f"{args.model}: not classifier-shaped ({model.not_classifier})")
    inputs, _ = read_sample(args.data, model.classifier.example_shape, args.label_column)
    if args.examples < 0 or args.replay < 0:
        raise AdaptError("--examples and --replay must be 0 or more")
    if args.examples:
        inputs = inputs[: args.examples]
    name = args.data if args.data == "digits" else Path(args.data).name
    adapted = adapt_model(model, inputs, name, reference=not args.no_reference, replay=args.replay)
    args.out.mkdir(parents=True, exist_ok=True)
    target = args.out / MODEL_FILE
    target.write_bytes(adapted.data)
    config = Path(args.model).parent / CONFIG_FILE
    if config.is_file():
        shutil.copyfile(config, args.out / CONFIG_FILE)
    return summary(adapted, str(target))


def summary(adapted, target: str) -> list[str]:
    """The adaptation as text: statistics moved, label-free signals, time, where it went."""
    import numpy as np

    record, seconds = adapted.record, adapted.seconds
    lines = [f"adapted {len(record.layers)} BN layer(s) on {record.examples} examples "
             f"of {record.data} ({seconds['estimate'] + seconds['check']:.2f} s, new reference "
             f"{seconds['reference']:.2f} s)"]  # fmt: skip
    for old, new in zip(adapted.source_stats, adapted.bn_stats, strict=True):
        mean = np.abs(np.subtract(new.mean, old.mean)) / np.sqrt(np.add(old.var, old.eps))
        ratio = np.sqrt(np.add(new.var, new.eps) / np.add(old.var, old.eps))
        lines.append(
            f"  BN {old.layer:>8}: mean moved {np.median(mean):.3g} sd (median), "
            f"sd ×{np.median(ratio):.3g} (median) over {len(old.mean)} channels"
        )
    lines.append(
        f"on the sample: agreement with the source {record.agreement:.3f}; mean prediction "
        f"entropy {record.entropy_source:.3f} → {record.entropy_adapted:.3f} nats"
    )
    lines.append(f"written to {target}")
    return lines
