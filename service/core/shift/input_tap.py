"""The shift monitor of a model without taps: the input BatchNorm's statistics only.

A file folded by `foldserve fold` records its BN statistics but has no taps and no calibration
(no held-out data went with it). When one folded BN read the model input, a vector of exactly its
channels, the live inputs are what its statistics describe, so the server taps them itself (the
values and their squares, as a `bn_input` tap) and scores them with the same statistic as any
model (`shift_stats`). The thresholds come from the statistic's null distribution: a replay, at
load, of inputs drawn independently per feature from N(mean, var) of the BN's statistics (seeded,
as long as the export's replay), whose highest scores times the margin are the thresholds. That
is what clean traffic scores *if* features are independent and Gaussian; correlated, skewed or
heavy-tailed features score higher on clean data, so the thresholds are a floor (raise them with
`--shift-margin`). The class priors are unknown: the prior signal's clean maximum is 1 bit (its
largest possible value), so it never fires.
"""

from __future__ import annotations

import numpy as np

from foldserve.contract import BN_INPUT, BNStats, LayerCalibration, ShiftCalibration, Tap
from foldserve.core.graph import Classifier
from foldserve.core.shift.settings import (
    SHIFT_CHECK_EVERY,
    SHIFT_CLIP,
    SHIFT_HALF_LIFE,
    SHIFT_MARGIN,
    SHIFT_MIN_VAR_FRACTION,
    SHIFT_PRIOR_MARGIN,
    SHIFT_REPLAY,
    SHIFT_REPLAY_SEED,
    SHIFT_VAR_FLOOR,
)
from foldserve.core.shift.stats import ShiftStatistic, references

NULL_DATA = "Gaussian null from the input BatchNorm's statistics (no held-out data)"
PRIOR_NEVER = 1.0  # the Jensen-Shannon divergence in bits is at most 1


def input_bn_tap(
    bn_stats: tuple[BNStats, ...], classifier: Classifier | None
) -> tuple[Tap, BNStats] | None:
    """The tap of the input BN and its statistics, None when the monitor cannot run: no
    classifier, no BN over the model input, or an input that is not a vector of its channels."""
    stats = next((s for s in bn_stats if s.reads_model_input), None)
    if classifier is None or stats is None or classifier.example_shape != (stats.num_features,):
        return None
    return Tap(stats.layer, "", BN_INPUT), stats


def null_calibration(stats: BNStats, tap: Tap, classes: int) -> ShiftCalibration:
    """Thresholds from a replay of Gaussian inputs drawn from the BN's statistics."""
    priors = (1.0 / classes,) * classes
    refs = references([stats], [tap], SHIFT_MIN_VAR_FRACTION)
    statistic = ShiftStatistic(refs, SHIFT_HALF_LIFE, SHIFT_VAR_FLOOR, priors, SHIFT_CLIP)
    rng = np.random.default_rng(SHIFT_REPLAY_SEED)
    mean, sd = np.asarray(stats.mean), np.sqrt(np.asarray(stats.var))
    state, peaks = statistic.new_state(), None
    for _ in range(SHIFT_REPLAY // SHIFT_CHECK_EVERY):
        x = rng.normal(mean, sd, size=(SHIFT_CHECK_EVERY, mean.size))
        state.add(np.concatenate([x, x * x], axis=1), rng.integers(0, classes, SHIFT_CHECK_EVERY))
        scores = statistic.scores(state)[:-1]
        peaks = scores if peaks is None else np.maximum(peaks, scores)
    assert peaks is not None
    excluded = tuple(int(i) for i in refs[0].excluded)
    layer = LayerCalibration(
        tap.layer,
        clean_max=float(peaks[0]),
        threshold=0.0,
        excluded=excluded,
        sentinel_clean_max=float(peaks[1]) if excluded else 0.0,
    )
    calibration = ShiftCalibration(
        half_life=SHIFT_HALF_LIFE, margin=SHIFT_MARGIN, prior_margin=SHIFT_PRIOR_MARGIN,
        replay=SHIFT_REPLAY, data=NULL_DATA, min_var_fraction=SHIFT_MIN_VAR_FRACTION,
        var_floor=SHIFT_VAR_FLOOR, layers=(layer,), class_priors=priors,
        prior_clean_max=PRIOR_NEVER, prior_threshold=0.0, clip=SHIFT_CLIP,
    )  # fmt: skip
    return calibration.with_margins(None, None)  # thresholds: margin × the clean maxima


def input_rows(batch: np.ndarray) -> np.ndarray:
    """The tap of a vector input: its values, then their squares ([N, 2 · features])."""
    return np.concatenate([batch, batch * batch], axis=1)
