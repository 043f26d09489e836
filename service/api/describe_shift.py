"""`DescribeModel`'s `shift` field: the monitor's reference, every test, what fired and since when.

The adapter (`foldserve.api.describe`) answers DescribeModel; this builds the shift monitor's
part of that answer from a model and its monitor, fields of foldserve 0.1's message included.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from foldserve._proto.foldserve.v1 import predictor_pb2 as pb
from foldserve.core.shift.snapshot import ShiftSnapshot, TestState

if TYPE_CHECKING:
    from foldserve.core.model import Model
    from foldserve.core.shift.monitor import ShiftMonitor


def shift_monitor(model: Model, monitor: ShiftMonitor | None) -> pb.ShiftMonitor:
    """The `shift` field of `DescribeModel` for one version."""
    if monitor is None:
        return pb.ShiftMonitor(enabled=False, reason=model.shift_off)
    shot = monitor.snapshot()
    reference = shot.reference
    return pb.ShiftMonitor(
        enabled=True,
        margin=1.0,
        prior_margin=1.0,
        replay=reference.replay,
        replay_data=reference.replay_data,
        examples=shot.examples,
        alarm=shot.alarm,
        first_alarm_example=shot.first_alarm_example,
        first_alarm=list(shot.first_alarm),
        layers=_layers(shot, monitor.tap_sides),
        prior=pb.ShiftPrior(
            score=shot.prior_score,
            threshold=shot.prior_threshold,
            clean_max=reference.replay_peak if reference.class_priors else 0.0,
            peak=shot.prior_peak,
            class_priors=list(reference.class_priors),
        ),
        arl=shot.arl,
        test_arl=shot.test_arl,
        first_alarm_tests=list(shot.first_alarm_tests),
        first_alarm_change=shot.first_alarm_change,
        tests=[_test(t) for t in shot.tests],
        reference_data=reference.data,
        reference_origin=model.shift.origin if model.shift is not None else "",
        shared=shot.shared,
    )


def _layers(shot: ShiftSnapshot, sides: dict[str, str]) -> list[pb.ShiftLayer]:
    """Per group: its score and peak (statistic/threshold), what it shows, its reference."""
    groups = {group.name: group for group in shot.reference.groups}
    return [
        pb.ShiftLayer(
            layer=name,
            score=score,
            threshold=1.0,
            clean_max=shot.reference.replay_peak,
            peak=peak,
            side=sides.get(name, ""),
            reference_mean=list(groups[name].center),
            reference_var=list(groups[name].var),
            summaries=list(groups[name].summaries),
        )
        for name, score, peak in zip(shot.names, shot.scores, shot.peaks, strict=True)
    ]


def _test(test: TestState) -> pb.ShiftTest:
    return pb.ShiftTest(
        name=test.name,
        statistic=test.statistic,
        threshold=test.threshold,
        alarm=test.alarm,
        alarm_example=test.alarm_example,
        change_example=test.change_example,
        peak=test.peak,
    )
