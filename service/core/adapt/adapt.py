"""Adapt a served model to new traffic: its folded BNs' statistics re-estimated on unlabeled
inputs, re-folded, checked, and written as a new model file that records where it came from.

Torch-free and `onnx`-free (onnxruntime, numpy, protobuf), so the server runs it too.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from foldserve.contract import (
    Adaptation,
    BNStats,
    ContractError,
    ShiftReference,
    adapted_properties,
)
from foldserve.core.adapt.check import AdaptError, Signals, check_adapted, signals
from foldserve.core.adapt.estimate import re_estimate, run_graph
from foldserve.core.adapt.onnx_file import GraphFileError, OnnxFile
from foldserve.core.adapt.sites import find_layers
from foldserve.core.model import Model
from foldserve.core.shift.calibrate import ReferenceData, ShiftConfig, calibrate, class_priors
from foldserve.core.shift.settings import SHIFT_ARL
from foldserve.runtime import ort
from foldserve.version import VERSION

MIN_EXAMPLES = 50  # fewer, and a layer's variance is a guess
HELD_OUT_FRACTION = 0.2  # of the sample: replayed to check the new reference's ARL
# Replay length of that check: none by default. Fitting is quick; the replay builds every class
# test's threshold (seconds to minutes on two cores), which the server does anyway on loading.
ADAPT_REPLAY = 0


@dataclass(frozen=True)
class Adapted:
    """An adapted model.

    Attributes:
        data: the adapted model file's bytes.
        bn_stats: the re-estimated statistics, in the source's order.
        source_stats: the source's.
        record: what the file records of its adaptation.
        reference: the shift reference fitted on the sample (None: no monitor could be fitted).
        check: the largest difference from the explicit re-computation, as a fraction of the
            tolerance (`check.TOLERANCE`).
        seconds: time taken, by step (`estimate`, `check`, `reference`).
    """

    data: bytes
    bn_stats: tuple[BNStats, ...]
    source_stats: tuple[BNStats, ...]
    record: Adaptation
    reference: ShiftReference | None
    check: float
    seconds: dict[str, float]

    @property
    def signals(self) -> Signals:
        r = self.record
        return Signals(r.agreement, r.entropy_source, r.entropy_adapted)


def adapt_model(
    model: Model,
    inputs: np.ndarray,
    data: str,
    *,
    reference: bool = True,
    replay: int = ADAPT_REPLAY,
) -> Adapted:
    """Re-estimate every folded BN of `model` on `inputs` (unlabeled) and re-fold it.

    Args:
        model: the loaded source model (its file is read again, and must not have changed).
        inputs: `[N, *example shape]` examples, N ≥ `MIN_EXAMPLES`.
        data: what the examples are, for the record.
        reference: fit a new shift reference on the sample.
        replay: replay this many draws of a held-out 20% of the sample through the new
            reference's tests (0: fit on all of it, no replay).

    Raises:
        AdaptError: not a classifier, no folded BN, too few examples, a layer the graph does
            not hold as a fold leaves it, a changed file, or a re-fold that fails its check.
    """
    source, classifier = _source(model, inputs)
    started = time.perf_counter()
    inputs = np.ascontiguousarray(inputs.reshape(-1, *classifier.example_shape), np.float32)
    graph = OnnxFile(source)
    left = [n.name or n.output[0] for n in graph.nodes if n.op_type == "BatchNormalization"]
    if left:
        raise AdaptError(
            f"{model.path}: BatchNormalization node(s) {left} left unfolded; adaptation "
            "re-estimates folded BNs only, and these would keep their old statistics"
        )
    taps = model.training.taps if model.training is not None else ()
    try:
        layers = find_layers(graph, model.bn_stats, taps)
    except GraphFileError as exc:
        raise AdaptError(f"{model.path}: {exc}") from None
    name, logits = classifier.input.name, classifier.logits
    stats, corrections = re_estimate(graph, layers, model.bn_stats, name, inputs)
    adapted = graph.to_bytes()
    seconds = {"estimate": time.perf_counter() - started}
    ratio, adapted_logits = check_adapted(source, adapted, corrections, name, inputs, logits)
    (source_logits,) = run_graph(source, name, inputs, [logits])  # a session of its own: one thread
    compared = signals(source_logits, adapted_logits)
    seconds["check"] = time.perf_counter() - started - seconds["estimate"]
    fitted = None
    if reference:
        fitted = _reference(adapted, model, tuple(stats), inputs, adapted_logits, data, replay)
    seconds["reference"] = time.perf_counter() - started - seconds["estimate"] - seconds["check"]
    record = _record(model, source, data, len(inputs), stats, layers, compared)
    graph.set_properties(_properties(graph, model, stats, fitted, record))
    return Adapted(graph.to_bytes(), tuple(stats), model.bn_stats, record, fitted, ratio, seconds)


def _source(model: Model, inputs: np.ndarray):
    """The source file's bytes and the classifier, once the request is checked."""
    where = model.path
    if model.classifier is None:
        raise AdaptError(f"{where}: not classifier-shaped ({model.not_classifier})")
    if not model.bn_stats:
        raise AdaptError(
            f"{where}: records no folded BatchNorm, so there are no statistics to re-estimate "
            "(fold it with `foldserve fold`)"
        )
    size = model.classifier.example_size
    shape = list(model.classifier.example_shape)
    if inputs.size % size:
        raise AdaptError(f"inputs: {inputs.size} values do not make examples of shape {shape}")
    if inputs.size // size < MIN_EXAMPLES:
        raise AdaptError(
            f"inputs: {inputs.size // size} examples; adaptation needs at least {MIN_EXAMPLES} "
            "(fewer, and a layer's variance is a guess)"
        )
    source = Path(model.path).read_bytes()
    if hashlib.sha256(source).hexdigest() != model.sha256:
        raise AdaptError(f"{where}: the file changed since it was loaded")
    return source, model.classifier


def _reference(
    adapted: bytes,
    model: Model,
    stats: tuple[BNStats, ...],
    inputs: np.ndarray,
    logits: np.ndarray,
    data: str,
    replay: int,
) -> ShiftReference:
    """The new monitor's reference, fitted on the sample (with a replay: on most of it, the rest
    replayed to check the stated ARL); class priors from the adapted model's own predictions
    (the sample has no labels)."""
    classifier = model.classifier
    held = np.zeros(len(inputs), bool)
    if replay > 0:
        order = np.random.default_rng(0).permutation(len(inputs))
        held[order[: round(HELD_OUT_FRACTION * len(inputs))]] = True
    priors = class_priors(logits.argmax(1)[~held], classifier.classes)
    fitted = f"{data}, {int((~held).sum())} examples (adaptation sample)"
    sample = ReferenceData(
        inputs[~held], priors, fitted, inputs[held] if replay > 0 else None,
        f"{data}, {int(held.sum())} examples held out",
    )  # fmt: skip
    old = model.training.shift_reference if model.training is not None else None
    config = ShiftConfig(arl=old.arl if old is not None else SHIFT_ARL, replay=replay)
    taps = model.training.taps if model.training is not None else ()
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    session = ort.InferenceSession(adapted, options, providers=["CPUExecutionProvider"])
    return calibrate(session, classifier, stats, taps, sample, config, model.class_labels)


def _record(model, source, data, examples, stats, layers, compared: Signals) -> Adaptation:
    order = [i for layer in layers for i in (*reversed(layer.forward), *layer.backward)]
    return Adaptation(
        source_sha256=hashlib.sha256(source).hexdigest(),
        source_version=model.training.model_version if model.training is not None else "",
        examples=examples,
        data=data,
        created=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        layers=tuple(stats[i].layer for i in order),
        agreement=compared.agreement,
        entropy_source=compared.entropy_source,
        entropy_adapted=compared.entropy_adapted,
    )


def _properties(graph, model, stats, reference, record) -> dict[str, str]:
    version = datetime.strptime(record.created, "%Y-%m-%dT%H:%M:%SZ").strftime("%Y%m%dT%H%M%SZ")
    try:
        return adapted_properties(graph.properties(), stats, reference, record, VERSION, version)
    except ContractError as exc:
        raise AdaptError(f"{model.path}: {exc}") from None
