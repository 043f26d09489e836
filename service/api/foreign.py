"""`DescribeModel`'s answer for a model foldserve did not train: what its graph and config say."""

from __future__ import annotations

from google.protobuf import struct_pb2

from service._proto.foldserve.v1 import predictor_pb2 as pb
from service.api.shift import shift_monitor
from service.core.model import Model
from service.core.monitor import ShiftMonitor


def describe_foreign(model: Model, monitor: ShiftMonitor | None = None) -> pb.DescribeModelResponse:
    """The input `Predict` fills (a model that is not classifier-shaped: its first input, -1 for
    a dynamic dimension), every graph output, the class labels, the fold report of a
    `foldserve fold` (empty without one); no training metrics, data set or architecture."""
    foreign = model.foreign
    assert foreign is not None
    classifier = foreign.classifier
    if classifier is not None:
        tensor, shape = classifier.input, list(classifier.input_shape)
    else:
        tensor = foreign.graph.inputs[0]
        shape = [-1 if d is None else d for d in tensor.shape[1:]]
    report = struct_pb2.Struct()
    report.update(foreign.fold_report.to_json())
    return pb.DescribeModelResponse(
        name=model.name,
        version=model.version,
        input_name=tensor.name,
        input_shape=shape,
        input_dtype=tensor.dtype.name,
        class_labels=model.class_labels,
        output_names=model.output_names,
        training_metrics=struct_pb2.Struct(),
        fold_report=report,
        foldserve_version=model.foldserve_version,
        sha256=model.sha256,
        opset=model.opset,
        shift=shift_monitor(model, monitor),
    )
