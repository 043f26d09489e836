"""The monitor's tests: one-sided CUSUMs, their thresholds from the stated ARL, their increments.

Per summary four Gaussian CUSUMs on its normal score z (`normal_scores`): `mean+` on z, `mean-`
on −z, `spread+` on the spread score u of z, `spread-` on −u; each adds `x − k` per example. Per
class with prior p two lattice CUSUMs on the predicted class: `rarer` (a miss +1, a hit −d: the
log-likelihood ratio of the class falling to `class_rarer · p`, in units of a miss) and `more`
(a hit +u, a miss −1: the class rising to `class_more · p`).

The false-alarm rate of the whole monitor, `1/arl`, is split evenly: each of the T tests gets
ARL `T · arl`, so (the union bound) the monitor's ARL is at least `arl` on clean traffic — more
where tests move together, as a summary's tests and a group's summaries do. The Gaussian
threshold follows from Siegmund's approximation, each class test's from its exact Markov chain
(`cusum`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from foldserve.contract import ShiftReference
from foldserve.core.shift.cusum import gaussian_threshold, lattice_threshold
from foldserve.core.shift.normal_scores import Spread
from foldserve.core.shift.settings import SHIFT_SATURATION

MEAN_UP, MEAN_DOWN, SPREAD_UP, SPREAD_DOWN = "mean+", "mean-", "spread+", "spread-"
GAUSSIAN_SIDES = (MEAN_UP, MEAN_DOWN, SPREAD_UP, SPREAD_DOWN)
RARER, MORE = "rarer", "more"
CLASSES = "classes"  # the summary name of the class tests


@dataclass(frozen=True)
class ClassTest:
    """A class-frequency test on a lattice: +up on a hit or a miss (`on_hit`), −down otherwise."""

    index: int
    prior: float
    on_hit: bool
    up: int
    down: int
    threshold: int


def class_test(
    index: int, prior: float, ratio: float, arl: float, tolerance: float = 0.0
) -> ClassTest:
    """The lattice CUSUM of class `index` becoming `ratio ×` as frequent as its prior; its
    threshold holds `arl` for any frequency within `tolerance` (relative) of the prior.

    Raises:
        ValueError: no such test holds `arl` (a class too rare, or too frequent to double).
    """
    alternative = min(prior * ratio, 0.5 * (1.0 + prior))  # a class at 0.6 cannot double
    hit = math.log(alternative / prior)
    miss = math.log((1.0 - alternative) / (1.0 - prior))
    if ratio < 1:  # rarer: misses drive it up, a hit pulls it down by d misses' worth
        down = max(1, round(-hit / miss))
        worst = 1.0 - prior * (1.0 - tolerance)  # the least frequent the class may be, clean
        return ClassTest(index, prior, False, 1, down, lattice_threshold(worst, 1, down, arl))
    up = max(1, round(hit / -miss))
    worst = min(prior * (1.0 + tolerance), 1.0 - 1e-9)
    return ClassTest(index, prior, True, up, 1, lattice_threshold(worst, up, 1, arl))


def robust_threshold(k: float, arl: float, tolerance: float, inflation: float) -> float:
    """The Gaussian CUSUM threshold that keeps `arl` on any N(μ, σ²) with |μ| ≤ tolerance and
    σ ≤ inflation: Siegmund's approximation for the standardised walk, whose reference value
    is (k − tolerance)/σ and threshold h/σ."""
    if tolerance >= k:
        raise ValueError(f"the tolerance {tolerance} must be under the reference value {k}")
    return inflation * gaussian_threshold((k - tolerance) / inflation, arl)


def _class_tests(
    usable: list[tuple[int, float]], reference: ShiftReference, arl: float
) -> list[ClassTest]:
    """Every class test that can hold `arl` (a class whose test cannot is left untested)."""
    tests = []
    for index, prior in usable:
        for ratio in (reference.class_rarer, reference.class_more):
            try:
                tests.append(class_test(index, prior, ratio, arl, reference.class_tolerance))
            except ValueError:
                continue
    return tests


class TestBank:
    """Every test of a reference: names, the summary each belongs to, thresholds, increments.

    Attributes:
        names: `<group>/<summary>:<side>` and `classes/<label>:rarer|more`.
        summaries: per test, the summary it reports under (`classes` for the class tests).
        thresholds: per test; `caps` where each statistic saturates.
        test_arl: every test's share of the stated ARL.
    """

    __test__ = False  # not a pytest class, whatever its name

    def __init__(
        self,
        reference: ShiftReference,
        summary_names: Sequence[str],
        class_labels: Sequence[str],
        arl: float | None = None,
    ) -> None:
        self.arl = float(arl or reference.arl)
        self.k = reference.k
        priors = reference.class_priors if len(reference.class_priors) == len(class_labels) else ()
        usable = [(i, p) for i, p in enumerate(priors) if 0.0 < p < 1.0]
        count = 4 * len(summary_names) + 2 * len(usable)
        self.test_arl = count * self.arl
        gaussian = robust_threshold(self.k, self.test_arl, reference.tolerance, reference.inflation)
        self.gaussian_threshold = gaussian
        self._classes = _class_tests(usable, reference, self.test_arl)
        self.names = tuple(
            [f"{s}:{side}" for s in summary_names for side in GAUSSIAN_SIDES]
            + [
                f"{CLASSES}/{class_labels[t.index]}:{MORE if t.on_hit else RARER}"
                for t in self._classes
            ]
        )
        self.summaries = tuple(
            [s for s in summary_names for _ in GAUSSIAN_SIDES] + [CLASSES] * len(self._classes)
        )
        self.thresholds = np.array(
            [gaussian] * (4 * len(summary_names)) + [t.threshold - 0.5 for t in self._classes]
        )
        self.caps = SHIFT_SATURATION * self.thresholds
        self._spread = Spread(reference.cap)
        self._hit_class = np.array([t.index for t in self._classes], dtype=np.int64)
        self._on_hit = np.array([t.on_hit for t in self._classes])
        self._hit_step = np.where(
            self._on_hit, [t.up for t in self._classes], [-t.down for t in self._classes]
        )
        self._miss_step = np.where(self._on_hit, -1.0, 1.0)

    def increments(self, scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """Each test's increment per example: [T, B] from normal scores [B, S] and labels [B]."""
        batch, count = scores.shape
        spread = self._spread(scores)
        out = np.empty((4 * count + len(self._classes), batch))
        gaussian = out[: 4 * count].reshape(count, 4, batch)
        np.subtract(scores.T, self.k, out=gaussian[:, 0])
        np.subtract(-self.k, scores.T, out=gaussian[:, 1])
        np.subtract(spread.T, self.k, out=gaussian[:, 2])
        np.subtract(-self.k, spread.T, out=gaussian[:, 3])
        if self._classes:
            hits = self._hit_class[:, None] == labels
            out[4 * count :] = np.where(hits, self._hit_step[:, None], self._miss_step[:, None])
        return out
