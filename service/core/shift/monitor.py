"""The covariate-shift monitor of one served model version: every tapped BN layer, live.

Each model run with the monitor on also fetches the graph's `taps` output (every tap end to end,
`foldserve.contract.shift`); `observe` keeps one example's row and class aside (one row copy under a
lock) and folds what it kept into the running state in one batched multiply-add at the next
check or snapshot (the same sums as one update per example, to rounding). Every `check_every`
examples the scores are computed against the calibrated thresholds: the per-layer statistic, the
sentinels and the class-prior signal (`foldserve.core.shift.stats`). The alarm is on while any
score is above its threshold; the first alarm is remembered with the example count and what
fired. Metrics and `DescribeModel` read a `snapshot`, computed fresh.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from foldserve.contract import BNStats, ShiftCalibration, Tap
from foldserve.core.shift.settings import SHIFT_CHECK_EVERY, SHIFT_PENDING_ROWS, ShiftSettings
from foldserve.core.shift.stats import ShiftStatistic, references

PRIOR = "prior"  # what `first_alarm` names when the class mix fired


@dataclass(frozen=True)
class ShiftSnapshot:
    """The monitor's state at one moment.

    `names`, `scores`, `thresholds` and `peaks` (highest score seen at a check) run in parallel:
    each tapped layer, then each `<layer>/sentinel`. `first_alarm_request` is the example count
    at the check that first found a score above its threshold (0: never), `first_alarm` what was
    above it then.
    """

    names: tuple[str, ...]
    scores: tuple[float, ...]
    thresholds: tuple[float, ...]
    peaks: tuple[float, ...]
    prior_score: float
    prior_threshold: float
    prior_peak: float
    requests: int
    alarm: bool
    first_alarm_request: int
    first_alarm: tuple[str, ...]
    calibration: ShiftCalibration


def build_statistic(
    bn_stats: Sequence[BNStats],
    taps: Sequence[Tap],
    calibration: ShiftCalibration,
    classes: int,
) -> ShiftStatistic:
    """The statistic that taps, a calibration and the BN statistics they refer to describe.

    Raises:
        ValueError: taps, calibration and BN statistics that do not fit together.
    """
    layers = [tap.layer for tap in taps]
    if [c.layer for c in calibration.layers] != layers:
        raise ValueError(
            f"calibrated layers {[c.layer for c in calibration.layers]} != taps {layers}"
        )
    units = {s.layer: s.num_features for s in bn_stats}
    for c in calibration.layers:
        if c.layer not in units:
            raise ValueError(f"tap of layer {c.layer!r}, which has no BN statistics")
        if any(i >= units[c.layer] for i in c.excluded):
            raise ValueError(f"layer {c.layer!r}: excluded unit beyond its {units[c.layer]} units")
    if len(calibration.class_priors) != classes:
        raise ValueError(f"{len(calibration.class_priors)} class priors for {classes} classes")
    excluded = {c.layer: c.excluded for c in calibration.layers}
    refs = references(bn_stats, taps, calibration.min_var_fraction, excluded)
    return ShiftStatistic(
        refs,
        calibration.half_life,
        calibration.var_floor,
        calibration.class_priors,
        calibration.clip,
    )


def thresholds(calibration: ShiftCalibration) -> np.ndarray:
    """Thresholds in score order: layers, sentinels, then the prior."""
    sentinels = [c.sentinel_threshold for c in calibration.layers if c.excluded]
    return np.array(
        [*(c.threshold for c in calibration.layers), *sentinels, calibration.prior_threshold]
    )


class ShiftMonitor:
    """Thread-safe running shift scores of one model version (build it with `of`)."""

    def __init__(
        self,
        statistic: ShiftStatistic,
        calibration: ShiftCalibration,
        check_every: int = SHIFT_CHECK_EVERY,
    ) -> None:
        self.calibration = calibration
        self.statistic = statistic
        self._stat = statistic
        self._thresholds = thresholds(calibration)
        self._check_every = max(1, check_every)
        self._running = statistic.new_state()
        self._peaks = np.zeros(len(self._thresholds))
        self._requests = 0
        self._next_check = self._check_every
        self._first_request = 0
        self._first: tuple[str, ...] = ()
        self._lock = threading.Lock()
        # Examples observed one at a time and not yet folded in (rows allocated on first use).
        self._capacity = min(self._check_every, SHIFT_PENDING_ROWS)
        self._rows: np.ndarray | None = None
        self._labels = np.zeros(self._capacity, np.int64)
        self._pending = 0

    @classmethod
    def of(
        cls,
        bn_stats: Sequence[BNStats],
        taps: Sequence[Tap],
        calibration: ShiftCalibration,
        classes: int,
        settings: ShiftSettings,
    ) -> ShiftMonitor:
        """The monitor of a model's taps against its calibration, with the server's margins.

        Raises:
            ValueError: taps, calibration and BN statistics that do not fit together.
        """
        calibration = calibration.with_margins(settings.margin, settings.prior_margin)
        statistic = build_statistic(bn_stats, taps, calibration, classes)
        return cls(statistic, calibration, settings.check_every)

    def observe(self, taps: np.ndarray, labels: np.ndarray) -> None:
        """Fold one model run in: its `taps` output (`[N, width]`) and predicted classes (`[N]`)."""
        count = labels.shape[0]
        if count == 0:
            return
        with self._lock:
            if count == 1:
                self._keep(taps[0], labels[0])
            else:
                self._fold()
                self._running.add(taps, labels)
            self._requests += count
            if self._requests >= self._next_check:
                self._fold()
                self._check(self._stat.scores(self._running))
                self._next_check = self._requests + self._check_every
            elif self._pending == self._capacity:
                self._fold()

    def _keep(self, row: np.ndarray, label: int) -> None:
        rows = self._rows
        if rows is None or rows.shape[1] != row.shape[0]:
            self._fold()
            rows = self._rows = np.empty((self._capacity, row.shape[0]), row.dtype)
        rows[self._pending] = row
        self._labels[self._pending] = label
        self._pending += 1

    def _fold(self) -> None:
        """Fold the kept examples into the running state, oldest first."""
        if self._pending:
            pending, self._pending = self._pending, 0
            self._running.add(self._rows[:pending], self._labels[:pending])  # type: ignore[index]

    def _check(self, scores: np.ndarray) -> np.ndarray:
        np.maximum(self._peaks, scores, out=self._peaks)
        above = scores > self._thresholds
        if not self._first_request and above.any():
            self._first_request = self._requests
            names = (*self._stat.names, PRIOR)
            self._first = tuple(n for n, hit in zip(names, above, strict=True) if hit)
        return above

    def snapshot(self) -> ShiftSnapshot:
        """The scores now (computed fresh), thresholds, peaks and alarm state."""
        with self._lock:
            self._fold()
            scores = self._stat.scores(self._running)
            above = self._check(scores) if self._requests else scores > self._thresholds
            peaks, requests = self._peaks.copy(), self._requests
            first_request, first = self._first_request, self._first
        limits = self._thresholds
        return ShiftSnapshot(
            names=self._stat.names,
            scores=tuple(float(s) for s in scores[:-1]),
            thresholds=tuple(float(t) for t in limits[:-1]),
            peaks=tuple(float(p) for p in peaks[:-1]),
            prior_score=float(scores[-1]),
            prior_threshold=float(limits[-1]),
            prior_peak=float(peaks[-1]),
            requests=requests,
            alarm=bool(above.any()),
            first_alarm_request=first_request,
            first_alarm=first,
            calibration=self.calibration,
        )
