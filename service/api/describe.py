"""`DescribeModel`'s answer: what the model file says about the model, and its shift monitor's
reference, thresholds and live scores, as protobuf."""

from __future__ import annotations

from google.protobuf import struct_pb2

from foldserve._proto.foldserve.v1 import predictor_pb2 as pb
from foldserve.api.describe_shift import shift_monitor
from foldserve.contract import Adaptation
from foldserve.core.model import Model
from foldserve.core.shift.monitor import ShiftMonitor


def _struct(value: object) -> struct_pb2.Struct:
    result = struct_pb2.Struct()
    result.update(value)
    return result


def describe(
    model: Model, monitor: ShiftMonitor | None = None, candidate: Model | None = None
) -> pb.DescribeModelResponse:
    """`DescribeModel`'s answer for a model: the input `Predict` fills (a model that is not
    classifier-shaped: its first input, -1 for a dynamic dimension), every output, the class
    labels, the fold report (empty without a fold), what training recorded (empty for a model
    foldserve did not train), the shift monitor's live state, the file's adaptation and the
    model's candidate version (`candidate`)."""
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
        adaptation=_adaptation(model.adaptation),
        candidate=_candidate(candidate),
    )


def _adaptation(record: Adaptation | None) -> pb.Adaptation | None:
    if record is None:
        return None
    return pb.Adaptation(**record.to_json())


def _candidate(candidate: Model | None) -> pb.Candidate | None:
    if candidate is None:
        return None
    return pb.Candidate(version=candidate.version, adaptation=_adaptation(candidate.adaptation))
