"""`DescribeModel`'s `shift` field: the monitor's reference, every test, what fired and since when.

The adapter (`foldserve.api.describe`) answers DescribeModel; this builds the shift monitor's
part of that answer from a model and its monitor, fields of foldserve 0.1's message included.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from foldserve._proto.foldserve.v1 import predictor_pb2 as pb

if TYPE_CHECKING:
    from foldserve.core.model import Model
    from foldserve.core.shift.monitor import ShiftMonitor


def shift_monitor(model: Model, monitor: ShiftMonitor | None) -> pb.ShiftMonitor:
    """The `shift` field of `DescribeModel` for one version."""
    if monitor is None:
        return pb.ShiftMonitor(enabled=False, reason=model.shift_off)
    shot = monitor.snapshot()
    reference = shot.reference
    groups = {group.name: group for group in reference.groups}
    layers = [
        pb.ShiftLayer(
            layer=name,
            score=score,
            threshold=1.0,
            clean_max=reference.replay_peak,
            peak=peak,
            side=monitor.tap_sides.get(name, ""),
            reference_mean=list(groups[name].center),
            reference_var=list(groups[name].var),
            summaries=list(groups[name].summaries),
        )
        for name, score, peak in zip(shot.names, shot.scores, shot.peaks, strict=True)
    ]
    tests = [
        pb.ShiftTest(
            name=t.name,
            statistic=t.statistic,
            threshold=t.threshold,
            alarm=t.alarm,
            alarm_example=t.alarm_example,
            change_example=t.change_example,
            peak=t.peak,
        )
        for t in shot.tests
    ]
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
        layers=layers,
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
        tests=tests,
        reference_data=reference.data,
        reference_origin=model.shift.origin if model.shift is not None else "",
        shared=shot.shared,
    )
