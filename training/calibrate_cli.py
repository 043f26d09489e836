"""`foldserve calibrate`: a shift monitor for any model, from a sample of its inputs.

    foldserve calibrate --model M.onnx --data sample.csv     # writes shift-reference.json beside M
    foldserve calibrate --model M.onnx --data tensors/ --out M-monitored.onnx

Torch-free (onnxruntime, numpy; onnx only to write a model file). The sample's examples run
through the model; the reference is fitted on most of them (`core.shift.calibrate`): the model
input, the class probabilities and, for a file that has them, its taps; the rest are replayed
through the tests to check the stated ARL. Class priors come from the sample's labels when it
has some that name the model's classes, else from the model's own predictions on the sample.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from foldserve.contract import SHIFT_REFERENCE_FILE
from foldserve.training.cli_shared import add_shift_arguments, shift_config

HELD_OUT_FRACTION = 0.2  # of the sample, replayed to check the ARL rather than fitted on
SEED = 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `foldserve calibrate` to the root parser."""
    from foldserve.client.commands import DefaultsHelpFormatter

    parser = subparsers.add_parser(
        "calibrate",
        help="fit a shift monitor's reference for any model from a sample of its inputs",
        formatter_class=DefaultsHelpFormatter,
        description="Run a sample of a model's inputs through it and fit the covariate-shift "
        'monitor\'s reference (docs: "How the shift monitor decides"): written beside the '
        "model file as "
        f"{SHIFT_REFERENCE_FILE}, where the server picks it up (also in a model repository's "
        "version directory), or into a copy of the model file (--out FILE.onnx). Exit 0 when "
        "written, 2 on an error.",
    )
    add = parser.add_argument
    add("--model", type=Path, required=True, metavar="M.onnx", help="the model file")
    add(
        "--data", required=True, metavar="D",
        help="a sample of the model's inputs: a .csv (numeric columns; --label-column dropped "
        "if present), a .npz (X, optionally y), a directory of .npy tensors (each one example "
        "or a batch), or `digits`",
    )  # fmt: skip
    add("--label-column", default="label", help="the CSV's label column, if it has one")
    add(
        "--out", type=Path, metavar="FILE",
        help=f"where to write: {SHIFT_REFERENCE_FILE} beside the model (default), another .json "
        "file, or a .onnx copy of the model with the reference in its metadata",
    )  # fmt: skip
    add(
        "--held-out", type=float, default=HELD_OUT_FRACTION, metavar="FRACTION",
        help="the part of the sample replayed to check the ARL instead of fitted on",
    )  # fmt: skip
    add_shift_arguments(parser)
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from foldserve.contract import ContractError
    from foldserve.core.errors import ModelError
    from foldserve.datasets import DataError

    try:
        written = calibrate_model(args)
    except (ModelError, DataError, ContractError, ValueError, OSError) as exc:
        print(f"foldserve calibrate: {exc}", file=sys.stderr)
        return 2
    print(written)
    return 0


def calibrate_model(args: argparse.Namespace) -> str:
    """Fit and write the reference; what was written, as text for the user."""
    from foldserve.core.loading import load_model
    from foldserve.core.shift.calibrate import (
        ReferenceData,
        calibrate,
        class_priors,
        reference_lines,
    )
    from foldserve.samples import read_sample

    model = load_model(args.model, monitor=False)
    classifier = model.classifier
    if classifier is None:
        raise ValueError(f"{args.model}: not classifier-shaped ({model.not_classifier})")
    inputs, labels = read_sample(args.data, classifier.example_shape, args.label_column)
    if not 0 < args.held_out < 1:
        raise ValueError(f"--held-out must be between 0 and 1, got {args.held_out}")
    from foldserve.core.shift.calibrate import run_sources
    from foldserve.runtime import ort

    taps = model.training.taps if model.training is not None else ()
    session = ort.InferenceSession(str(args.model), providers=["CPUExecutionProvider"])
    _, predicted = run_sources(session, classifier, inputs, taps=False)
    classes = _classes(model.class_labels, labels, predicted)
    fit, held = stratified_split(classes, args.held_out, SEED)
    if len(fit) < 20 or not len(held):
        raise ValueError(f"{args.data}: {len(inputs)} examples; the reference needs at least 25")
    priors = class_priors(classes[fit], classifier.classes)
    data = ReferenceData(
        inputs[fit], priors, f"{_name(args.data)}, {len(fit)} examples", inputs[held],
        f"{_name(args.data)}, {len(held)} examples held out",
    )  # fmt: skip
    reference = calibrate(
        session, classifier, model.bn_stats, taps, data, shift_config(args), model.class_labels
    )
    where = _write(reference, args.model, args.out)
    return "\n".join([*reference_lines(reference), f"written to {where}"])


def _classes(names, labels: np.ndarray | None, predicted: np.ndarray) -> np.ndarray:
    """Each example's class: its label when the labels name the model's classes, else the
    model's prediction."""
    names = list(names)
    if labels is not None and set(labels.tolist()) <= set(names):
        return np.array([names.index(v) for v in labels.tolist()], dtype=np.int64)
    return predicted


def stratified_split(
    classes: np.ndarray, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """(fitted, held out) indices, `fraction` of each class held out: the held-out examples
    keep the sample's class mix, so their replay checks the class tests as the reference has
    them, not a sampling accident of the mix."""
    rng = np.random.default_rng(seed)
    fit, held = [], []
    for label in np.unique(classes):
        members = rng.permutation(np.flatnonzero(classes == label))
        cut = round(fraction * len(members))
        held.append(members[:cut])
        fit.append(members[cut:])
    return np.concatenate(fit), np.concatenate(held)


def _name(data: str) -> str:
    return data if data == "digits" else Path(data).name


def _write(reference, model: Path, out: Path | None) -> Path:
    import json

    from foldserve import contract

    target = out or model.parent / SHIFT_REFERENCE_FILE
    if target.suffix.lower() == ".onnx":
        import onnx

        proto = onnx.load(str(model))
        properties = {p.key: p.value for p in proto.metadata_props}
        properties.update(contract.shift_reference_properties(reference))
        onnx.helper.set_model_props(proto, properties)
        onnx.save(proto, str(target))
    else:
        target.write_text(json.dumps(reference.to_json()) + "\n")
    return target
