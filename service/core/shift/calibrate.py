"""Fitting the shift monitor's reference for a model file, and checking its stated ARL by replay.

Torch-free (onnxruntime and numpy): export runs it on the graph it wrote, `foldserve calibrate` on
any model. The reference sample (for a trained model: its training and validation splits) runs
through the graph once; each group's summaries and their distributions are fitted on it
(`foldserve.core.shift.reference`): the model input, every tap of the graph, the class
probabilities. Clean held-out examples are then replayed through the very tests the server runs
(`foldserve.core.shift.replay`): how many alarms they raised, and the highest
statistic/threshold they reached, go into the reference with it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from foldserve.contract import (
    SOURCE_INPUT,
    SOURCE_PROBABILITIES,
    SOURCE_TAPS,
    TAPS,
    BNStats,
    ShiftReference,
    Tap,
)
from foldserve.core.graph import Classifier
from foldserve.core.shift.reference import GroupSpec, fit_reference
from foldserve.core.shift.replay import replay
from foldserve.core.shift.settings import (
    SHIFT_ARL,
    SHIFT_COMPONENTS,
    SHIFT_INPUT_MAX,
    SHIFT_OUTPUT_COMPONENTS,
    SHIFT_REPLAY,
    SHIFT_REPLAY_SEED,
)
from foldserve.runtime import ort


@dataclass(frozen=True)
class ShiftConfig:
    """The reference's settings (`foldserve train|export|calibrate --shift-*`)."""

    arl: float = SHIFT_ARL
    components: int = SHIFT_COMPONENTS
    replay: int = SHIFT_REPLAY
    seed: int = SHIFT_REPLAY_SEED


@dataclass(frozen=True)
class ReferenceData:
    """The sample a reference is fitted on, and clean examples to check it with.

    Attributes:
        inputs: float32 `[N, *input shape]`, the reference sample.
        class_priors: the training class frequencies (empty: no class tests).
        description: what the sample is, e.g. "digits training and validation splits".
        held_out: clean examples to replay (None: the reference sample itself).
        held_out_description: what they are.
    """

    inputs: np.ndarray
    class_priors: tuple[float, ...]
    description: str
    held_out: np.ndarray | None = None
    held_out_description: str = ""


def class_priors(labels: np.ndarray, classes: int) -> tuple[float, ...]:
    """Class frequencies of a label vector, in class-index order."""
    counts = np.bincount(labels, minlength=classes).astype(np.float64)
    return tuple(float(c) for c in counts / counts.sum())


def group_specs(
    example_size: int,
    taps: tuple[Tap, ...],
    bn_stats: tuple[BNStats, ...],
    classes: int,
    components: int = SHIFT_COMPONENTS,
) -> list[GroupSpec]:
    """The groups of a model: its input (when not too wide; with its residual), each tap's
    values (not a file's squares), and the class probabilities."""
    specs = []
    if example_size <= SHIFT_INPUT_MAX:
        specs.append(
            GroupSpec(SOURCE_INPUT, SOURCE_INPUT, 0, example_size, components, residual=True)
        )
    units = {s.layer: s.num_features for s in bn_stats}
    start = 0
    for tap in taps:
        width = units[tap.layer]
        specs.append(GroupSpec(tap.layer, SOURCE_TAPS, start, width, components))
        start += tap.moments * width
    if classes > 1:
        count = min(SHIFT_OUTPUT_COMPONENTS, classes - 1)
        specs.append(GroupSpec(SOURCE_PROBABILITIES, SOURCE_PROBABILITIES, 0, classes, count))
    return specs


def run_sources(
    session: ort.InferenceSession, classifier: Classifier, inputs: np.ndarray, taps: bool
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Every row source of `inputs` through the graph (`[N, width]` each), and the classes."""
    names = [classifier.logits, *([classifier.probabilities] if classifier.probabilities else [])]
    names += [TAPS] if taps else []
    feed = {
        classifier.input.name: inputs.reshape(-1, *classifier.example_shape).astype(
            classifier.input.dtype
        )
    }
    values = dict(zip(names, session.run(names, feed), strict=True))
    logits = values[classifier.logits].astype(np.float64)
    probabilities = values.get(classifier.probabilities) if classifier.probabilities else None
    if probabilities is None:
        exp = np.exp(logits - logits.max(axis=1, keepdims=True))
        probabilities = exp / exp.sum(axis=1, keepdims=True)
    sources = {
        SOURCE_INPUT: inputs.reshape(len(inputs), -1).astype(np.float64),
        SOURCE_PROBABILITIES: np.asarray(probabilities, np.float64),
    }
    if taps:
        sources[SOURCE_TAPS] = values[TAPS].astype(np.float64)
    return sources, logits.argmax(axis=1)


def calibrate(
    session: ort.InferenceSession,
    classifier: Classifier,
    bn_stats: tuple[BNStats, ...],
    taps: tuple[Tap, ...],
    data: ReferenceData,
    config: ShiftConfig,
    class_labels: tuple[str, ...] = (),
) -> ShiftReference:
    """Fit the reference of a model graph on `data`, then check it by a replay.

    Args:
        session: the graph (with its `taps` output when `taps`).
        classifier: how it classifies (its input, logits and probabilities outputs).
        bn_stats, taps: what the graph's metadata says (a foreign model: none).
        data: the reference sample, the class priors and held-out examples.
        config: the stated ARL, components per group, replay length (0: no replay) and seed.
        class_labels: the model's (the class tests' names; default "0".."C-1").
    """
    sources, _ = run_sources(session, classifier, data.inputs, bool(taps))
    classes = sources[SOURCE_PROBABILITIES].shape[1]
    example_size = sources[SOURCE_INPUT].shape[1]
    specs = group_specs(example_size, taps, bn_stats, classes, config.components)
    priors = data.class_priors if len(data.class_priors) == classes else ()
    reference = fit_reference(specs, sources, priors, data.description, arl=config.arl)
    if config.replay <= 0:  # no check asked for (`foldserve adapt`'s default: it must be quick)
        return reference
    held = data.held_out if data.held_out is not None else data.inputs
    rows, labels = run_sources(session, classifier, held, bool(taps))
    labels_text = class_labels or tuple(str(i) for i in range(classes))
    checked = replay(reference, rows, labels, labels_text, config.replay, config.seed)
    return replace(
        reference,
        replay=checked.examples,
        replay_data=data.held_out_description or data.description,
        replay_alarms=checked.alarms,
        replay_peak=checked.peak,
    )


def reference_lines(reference: ShiftReference) -> list[str]:
    """What a reference tests and how sure it must be to alarm, as text lines."""
    from foldserve.core.shift.bank import TestBank

    names = [f"{g.name}/{s}" for g in reference.groups for s in g.summaries]
    labels = [str(i) for i in range(len(reference.class_priors))]
    bank = TestBank(reference, names, labels)
    lines = [
        f"shift monitor: reference of {reference.data}; {len(bank.names)} CUSUM tests, stated "
        f"ARL {reference.arl:.3g} examples (each test {bank.test_arl:.3g})",
        f"  normal-score tests: k {reference.k:g}, threshold {bank.gaussian_threshold:.4g} "
        f"(tolerance {reference.tolerance:g} sd, spread x{reference.inflation:g})",
    ]
    for group in reference.groups:
        lines.append(
            f"  {group.name:>13}: {', '.join(group.summaries)} (shrinkage {group.shrinkage:.3f})"
        )
    classes = bank.thresholds[4 * len(names) :]
    if len(classes):
        lines.append(
            f"  class tests: {len(classes)}, thresholds {classes.min() + 0.5:.0f}"
            f"-{classes.max() + 0.5:.0f} steps"
        )
    lines.append(
        f"  replay of {reference.replay} examples of {reference.replay_data}: "
        f"{reference.replay_alarms} alarm(s), highest statistic/threshold "
        f"{reference.replay_peak:.2f}"
    )
    return lines
