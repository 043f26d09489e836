"""`DescribeModel`'s answer: what the model file says about the model, and its shift monitor's
reference, thresholds and live scores, as protobuf."""

from __future__ import annotations

from google.protobuf import struct_pb2

from foldserve._proto.foldserve.v1 import predictor_pb2 as pb
from foldserve.core.model import Model
from foldserve.core.shift.monitor import ShiftMonitor
from foldserve.core.shift.stats import SENTINEL_SUFFIX


def shift_monitor(model: Model, monitor: ShiftMonitor | None) -> pb.ShiftMonitor:
    """The `shift` field of `DescribeModel` for one version."""
    if monitor is None:
        return pb.ShiftMonitor(enabled=False, reason=model.shift_off)
    shot = monitor.snapshot()
    calibration = shot.calibration
    layers = {c.layer: c for c in calibration.layers}
    sides = {tap.layer: tap.side for tap in monitor_taps(model)}
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


def monitor_taps(model: Model) -> tuple:
    return model.shift.taps if model.shift is not None else ()


def _struct(value: object) -> struct_pb2.Struct:
    result = struct_pb2.Struct()
    result.update(value)
    return result


def describe(model: Model, monitor: ShiftMonitor | None = None) -> pb.DescribeModelResponse:
    """`DescribeModel`'s answer for a model: the input `Predict` fills (a model that is not
    classifier-shaped: its first input, -1 for a dynamic dimension), every output, the class
    labels, the fold report (empty without a fold), what training recorded (empty for a model
    foldserve did not train), and the shift monitor's live state."""
    classifier = model.classifier
    if classifier is not None:
        tensor, shape = classifier.input, list(classifier.example_shape)
    else:
        tensor = model.inputs[0]
        shape = tensor.shown_shape[1:]
    training = model.training
    return pb.DescribeModelResponse(
        name=model.name,
        version=model.version,
        input_name=tensor.name,
        input_shape=shape,
        input_dtype=tensor.type_name,
        class_labels=model.class_labels,
        output_names=model.output_names,
        training_metrics=_struct(dict(training.training_metrics) if training else {}),
        fold_report=_struct(model.fold_report.to_json()),
        dataset=training.dataset if training else "",
        arch=training.arch if training else "",
        created=training.created if training else "",
        foldserve_version=model.foldserve_version,
        sha256=model.sha256,
        opset=model.opset,
        shift=shift_monitor(model, monitor),
    )
