"""What the monitor says at one moment: every test, every summary, the alarm and since when.

`ShiftSnapshot` is what metrics and DescribeModel read. Beside the sequential tests' own fields
it keeps, per *group* (the model input, each tapped layer, the class probabilities) and for the
class tests (`prior`), the fields DescribeModel's adapter read from the monitor before it
(`names`, `scores`, `thresholds`, `peaks`, `prior_*`, `first_alarm`, `calibration`): a group's
score is its highest statistic/threshold, so its threshold is 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from foldserve.contract import ShiftReference
from foldserve.core.shift.bank import CLASSES
from foldserve.core.shift.state import H_EXAMPLES, H_FIRST, H_FIRST_CHANGE, H_REBUILT, StateView

if TYPE_CHECKING:
    from foldserve.core.shift.monitor import ShiftMonitor

PRIOR = "prior"  # the class tests, as a group in the fields kept for DescribeModel


@dataclass(frozen=True)
class TestState:
    """One test now: its CUSUM against its threshold, when its alarm began (0: not alarming),
    where its current excursion began (the change it estimates), its highest ratio so far."""

    name: str
    summary: str
    statistic: float
    threshold: float
    arl: float
    alarm_example: int
    change_example: int
    peak: float

    @property
    def alarm(self) -> bool:
        return self.statistic > self.threshold


@dataclass(frozen=True)
class LegacyLayer:
    layer: str
    clean_max: float = 0.0
    excluded: tuple[int, ...] = ()
    sentinel_clean_max: float = 0.0


@dataclass(frozen=True)
class LegacyCalibration:
    """The calibration fields DescribeModel's adapter reads (`shift_monitor`)."""

    data: str
    replay: int
    layers: tuple[LegacyLayer, ...]
    class_priors: tuple[float, ...]
    half_life: float = 0.0
    margin: float = 1.0
    prior_margin: float = 1.0
    prior_clean_max: float = 0.0


@dataclass(frozen=True)
class GroupReference:
    """A group's reference per unit, as DescribeModel shows it (`reference_mean`, `_var`)."""

    layer: str
    center: np.ndarray
    var: np.ndarray


@dataclass(frozen=True)
class References:
    """The groups' references (`ShiftMonitor.statistic.refs`, which DescribeModel reads)."""

    refs: tuple[GroupReference, ...]

    @classmethod
    def of(cls, reference: ShiftReference) -> References:
        return cls(
            tuple(
                GroupReference(g.name, np.asarray(g.center), np.asarray(g.var))
                for g in reference.groups
            )
        )


@dataclass(frozen=True)
class ShiftSnapshot:
    """The monitor's state at one moment.

    Attributes:
        tests: every test, in bank order.
        summary_names, summary_scores, summary_peaks, summary_since: per summary (and
            `classes`): its tests' highest statistic/threshold now and ever, and the example its
            current alarm began at (0: none).
        examples: examples folded in (every process's, when the state is shared).
        alarm: some test is above its threshold now.
        first_alarm_example: the example at which a test first crossed (0: never);
            `first_alarm_tests` those above then; `first_alarm_change` the earliest change
            they estimated (the example after their statistic last stood at 0).
        arl, test_arl: the stated ARL of the monitor and of each Gaussian test.
        shared: the state is shared by the server's processes; `contributors` maps each
            process id that folded examples in to how many; `rebuilt` counts states rebuilt
            after a process died half way through writing one.
    """

    tests: tuple[TestState, ...]
    summary_names: tuple[str, ...]
    summary_scores: tuple[float, ...]
    summary_peaks: tuple[float, ...]
    summary_since: tuple[int, ...]
    examples: int
    alarm: bool
    first_alarm_example: int
    first_alarm_tests: tuple[str, ...]
    first_alarm_change: int
    arl: float
    test_arl: float
    shared: bool
    contributors: dict[int, int]
    rebuilt: int
    reference: ShiftReference
    # Per group and the class tests (`prior`), as DescribeModel's adapter reads them.
    names: tuple[str, ...]
    scores: tuple[float, ...]
    thresholds: tuple[float, ...]
    peaks: tuple[float, ...]
    prior_score: float
    prior_threshold: float
    prior_peak: float
    first_alarm: tuple[str, ...]
    calibration: LegacyCalibration

    @property
    def requests(self) -> int:
        return self.examples

    @property
    def first_alarm_request(self) -> int:
        return self.first_alarm_example


def _group(summary: str) -> str:
    return PRIOR if summary == CLASSES else summary.rsplit("/", 1)[0]


def _by(keys: list[str], values: np.ndarray, reduce) -> tuple[list[str], list[float]]:
    names = list(dict.fromkeys(keys))
    index = {name: i for i, name in enumerate(names)}
    out = np.zeros(len(names)) if reduce is np.maximum else np.full(len(names), np.inf)
    reduce.at(out, [index[k] for k in keys], values)
    return names, out.tolist()


def _tests(bank, view: StateView) -> tuple[TestState, ...]:
    return tuple(
        TestState(name, summary, float(s), float(h), bank.test_arl, int(a), int(z) + 1, float(p))
        for name, summary, s, h, a, z, p in zip(
            bank.names, bank.summaries, view.statistic, bank.thresholds, view.alarm_at,
            view.zero_at, view.peak, strict=True,
        )
    )  # fmt: skip


def _legacy(bank, view: StateView, ratio: np.ndarray, reference: ShiftReference) -> dict:
    """The per-group fields DescribeModel's adapter reads (the class tests as `prior`)."""
    groups = [_group(s) for s in bank.summaries]
    names, scores = _by(groups, ratio, np.maximum)
    _, peaks = _by(groups, view.peak, np.maximum)
    fired = list(dict.fromkeys(g for g, hit in zip(groups, view.first, strict=True) if hit))
    prior = names.index(PRIOR) if PRIOR in names else None
    layers = [i for i, name in enumerate(names) if name != PRIOR]
    return {
        "names": tuple(names[i] for i in layers),
        "scores": tuple(scores[i] for i in layers),
        "thresholds": (1.0,) * len(layers),
        "peaks": tuple(peaks[i] for i in layers),
        "prior_score": scores[prior] if prior is not None else 0.0,
        "prior_threshold": 1.0 if prior is not None else 0.0,
        "prior_peak": peaks[prior] if prior is not None else 0.0,
        "first_alarm": tuple(fired),
        "calibration": LegacyCalibration(
            data=reference.replay_data or reference.data,
            replay=reference.replay,
            layers=tuple(LegacyLayer(names[i]) for i in layers),
            class_priors=reference.class_priors,
        ),
    }


def of(monitor: ShiftMonitor, view: StateView) -> ShiftSnapshot:
    """The snapshot of `monitor` from a copy of its state."""
    bank = monitor.bank
    ratio = view.statistic / bank.thresholds
    summaries, scores = _by(list(bank.summaries), ratio, np.maximum)
    _, peaks = _by(list(bank.summaries), view.peak, np.maximum)
    alarm_at = np.where(view.alarm_at > 0, view.alarm_at, np.inf)
    _, since = _by(list(bank.summaries), alarm_at, np.minimum)
    return ShiftSnapshot(
        tests=_tests(bank, view),
        summary_names=tuple(summaries),
        summary_scores=tuple(scores),
        summary_peaks=tuple(peaks),
        summary_since=tuple(int(s) if np.isfinite(s) else 0 for s in since),
        examples=int(view.header[H_EXAMPLES]),
        alarm=bool((ratio > 1.0).any()),
        first_alarm_example=int(view.header[H_FIRST]),
        first_alarm_tests=tuple(n for n, hit in zip(bank.names, view.first, strict=True) if hit),
        first_alarm_change=int(view.header[H_FIRST_CHANGE]),
        arl=bank.arl,
        test_arl=bank.test_arl,
        shared=monitor.shared,
        contributors={int(p): int(n) for p, n in view.slots if n > 0},
        rebuilt=int(view.header[H_REBUILT]),
        reference=monitor.reference,
        **_legacy(bank, view, ratio, monitor.reference),
    )
