"""`DescribeModel`'s `shift`: the monitor's reference, thresholds and live scores, as protobuf."""

from __future__ import annotations

from service._proto.foldserve.v1 import predictor_pb2 as pb
from service.core.model import Model
from service.core.monitor import ShiftMonitor
from service.core.shift_stats import SENTINEL_SUFFIX


def off_reason(model: Model) -> str:
    """Why a version runs no monitor."""
    meta = model.metadata
    if meta is None:
        if model.foreign is not None and model.foreign.shift is not None:
            return "the server runs with --shift-monitor off"
        return (
            "foldserve did not export the model file: the monitor needs a BN over the model "
            "input, recorded by `foldserve fold`, on a classifier's vector input"
        )
    if not meta.taps:
        return "the model file has no taps (export it again with this foldserve)"
    if meta.shift_calibration is None:
        return "the model file has taps but no calibration (no held-out data at export)"
    return "the server runs with --shift-monitor off"


def shift_monitor(model: Model, monitor: ShiftMonitor | None) -> pb.ShiftMonitor:
    """The `shift` field of `DescribeModel` for one version."""
    if monitor is None:
        return pb.ShiftMonitor(enabled=False, reason=off_reason(model))
    shot = monitor.snapshot()
    calibration = shot.calibration
    layers = {c.layer: c for c in calibration.layers}
    sides = {tap.layer: tap.side for tap in model.taps}
    refs = {ref.layer: ref for ref in monitor.statistic.refs}
    entries = []
    for name, score, limit, peak in zip(
        shot.names, shot.scores, shot.thresholds, shot.peaks, strict=True
    ):
        layer = name.removesuffix(SENTINEL_SUFFIX)
        sentinel = name != layer
        cal, ref = layers[layer], refs[layer]
        entries.append(
            pb.ShiftLayer(
                layer=name,
                score=score,
                threshold=limit,
                clean_max=cal.sentinel_clean_max if sentinel else cal.clean_max,
                peak=peak,
                side=sides[layer],
                reference_mean=[] if sentinel else ref.center.tolist(),
                reference_var=[] if sentinel else ref.var.tolist(),
                excluded_units=list(cal.excluded),
            )
        )
    return pb.ShiftMonitor(
        enabled=True,
        half_life=calibration.half_life,
        margin=calibration.margin,
        prior_margin=calibration.prior_margin,
        replay=calibration.replay,
        replay_data=calibration.data,
        examples=shot.requests,
        alarm=shot.alarm,
        first_alarm_example=shot.first_alarm_request,
        first_alarm=list(shot.first_alarm),
        layers=entries,
        prior=pb.ShiftPrior(
            score=shot.prior_score,
            threshold=shot.prior_threshold,
            clean_max=calibration.prior_clean_max,
            peak=shot.prior_peak,
            class_priors=list(calibration.class_priors),
        ),
    )
