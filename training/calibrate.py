"""Calibrating the shift monitor at export: a clean replay of held-out data sets every threshold.

The exported graph runs the held-out examples once (with its taps); the replay then streams them
one request at a time through the very statistic the server runs (`foldserve.core.shift.stats`),
scoring after every request. Each threshold is a margin times the highest score of that replay.

A replay of one small held-out set (digits: 270 examples) only measures how the order of those
examples moves the scores; live clean traffic is another sample, whose own composition moves them
too (one trained model's clean test split sat at 1.05 of a threshold set that way). So the replay
streams a fresh bootstrap resample of the held-out set every `resample_every` requests.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from foldserve.contract import LOGITS, TAPS, BNStats, LayerCalibration, ShiftCalibration, Tap
from foldserve.core.shift.settings import (
    SHIFT_CLIP,
    SHIFT_HALF_LIFE,
    SHIFT_MARGIN,
    SHIFT_MIN_VAR_FRACTION,
    SHIFT_PRIOR_MARGIN,
    SHIFT_REPLAY,
    SHIFT_REPLAY_SEED,
    SHIFT_RESAMPLE_EVERY,
    SHIFT_VAR_FLOOR,
)
from foldserve.core.shift.stats import SENTINEL_SUFFIX, ShiftStatistic, references
from foldserve.runtime import ort


@dataclass(frozen=True)
class ShiftConfig:
    """The calibration's settings (`foldserve train|export --shift-*`)."""

    half_life: float = SHIFT_HALF_LIFE
    margin: float = SHIFT_MARGIN
    prior_margin: float = SHIFT_PRIOR_MARGIN
    replay: int = SHIFT_REPLAY
    seed: int = SHIFT_REPLAY_SEED
    min_var_fraction: float = SHIFT_MIN_VAR_FRACTION
    var_floor: float = SHIFT_VAR_FLOOR
    clip: float = SHIFT_CLIP
    resample_every: int = SHIFT_RESAMPLE_EVERY


@dataclass(frozen=True)
class HeldOut:
    """Clean examples the network was not fitted on, and the training split's class priors."""

    inputs: np.ndarray  # float32, [N, *input shape]
    class_priors: tuple[float, ...]
    description: str  # e.g. "digits validation split, 270 examples"


def class_priors(labels: np.ndarray, classes: int) -> tuple[float, ...]:
    """Class frequencies of a label vector, in class-index order."""
    counts = np.bincount(labels, minlength=classes).astype(np.float64)
    return tuple(float(c) for c in counts / counts.sum())


def replay_order(examples: int, requests: int, seed: int, resample_every: int = 0) -> np.ndarray:
    """`requests` indices into `examples` (seeded): shuffled passes over all of them, or, with
    `resample_every`, over a fresh bootstrap resample of them every that many requests."""
    rng = np.random.default_rng(seed)
    segment = resample_every or requests
    order: list[np.ndarray] = []
    while sum(len(part) for part in order) < requests:
        pool = rng.choice(examples, examples) if resample_every else np.arange(examples)
        passes = -(-segment // examples)
        order.append(np.concatenate([pool[rng.permutation(examples)] for _ in range(passes)]))
        order[-1] = order[-1][:segment]
    return np.concatenate(order)[:requests]


def replay_maxima(
    stat: ShiftStatistic, rows: np.ndarray, labels: np.ndarray, config: ShiftConfig
) -> np.ndarray:
    """The highest of every score (in `stat.names` order, then the prior) over the replay."""
    running = stat.new_state()
    maxima = np.zeros(len(stat.names) + 1)
    order = replay_order(len(labels), config.replay, config.seed, config.resample_every)
    for index in order:
        running.add(rows[index : index + 1], labels[index : index + 1])
        np.maximum(maxima, stat.scores(running), out=maxima)
    return maxima


def calibrate(
    model_bytes: bytes,
    bn_stats: tuple[BNStats, ...],
    taps: tuple[Tap, ...],
    held_out: HeldOut,
    config: ShiftConfig,
) -> ShiftCalibration:
    """Replay `held_out` through the exported graph and set every threshold.

    Args:
        model_bytes: the exported ONNX graph (with its tap outputs).
        bn_stats, taps: what the graph's metadata will say.
        held_out: the clean examples and the class priors.
        config: half-life, margins, replay length and seed.
    """
    session = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: held_out.inputs}
    logits, rows = session.run([LOGITS, TAPS], feed)
    rows = rows.astype(np.float64)
    labels = logits.argmax(axis=1)
    refs = references(bn_stats, taps, config.min_var_fraction)
    priors = held_out.class_priors
    stat = ShiftStatistic(refs, config.half_life, config.var_floor, priors, config.clip)
    maxima = replay_maxima(stat, rows, labels, config)
    sentinel_max = dict(zip(stat.names[len(taps) :], maxima[len(taps) : -1], strict=True))
    layers = tuple(
        LayerCalibration(
            layer=ref.layer,
            clean_max=float(maxima[i]),
            threshold=0.0,
            excluded=tuple(int(u) for u in ref.excluded),
            sentinel_clean_max=float(sentinel_max.get(stat.names[i] + SENTINEL_SUFFIX, 0.0)),
        )
        for i, ref in enumerate(refs)
    )
    calibration = ShiftCalibration(
        half_life=config.half_life,
        margin=config.margin,
        prior_margin=config.prior_margin,
        replay=config.replay,
        data=held_out.description,
        min_var_fraction=config.min_var_fraction,
        var_floor=config.var_floor,
        layers=layers,
        class_priors=held_out.class_priors,
        prior_clean_max=float(maxima[-1]),
        prior_threshold=0.0,
        clip=config.clip,
        resample_every=config.resample_every,
    )
    return calibration.with_margins(None, None)  # sets the thresholds from the maxima
