"""Read the default-domain opset of an ONNX file without the `onnx` package.

onnxruntime does not report the opset, and the serving install must stay free of `onnx` (and of
torch), so we parse just `ModelProto.opset_import` (field 8) with a two-message schema built at
import time; protobuf skips every other field of the file.
"""

from __future__ import annotations

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

_FIELD = descriptor_pb2.FieldDescriptorProto


def _build_model_header() -> type:
    file = descriptor_pb2.FileDescriptorProto(
        name="foldserve_onnx_header.proto", package="foldserve_onnx_header", syntax="proto2"
    )
    opset = file.message_type.add(name="OperatorSetId")
    opset.field.add(name="domain", number=1, type=_FIELD.TYPE_STRING, label=_FIELD.LABEL_OPTIONAL)
    opset.field.add(name="version", number=2, type=_FIELD.TYPE_INT64, label=_FIELD.LABEL_OPTIONAL)
    model = file.message_type.add(name="ModelHeader")
    model.field.add(
        name="opset_import",
        number=8,
        type=_FIELD.TYPE_MESSAGE,
        label=_FIELD.LABEL_REPEATED,
        type_name=".foldserve_onnx_header.OperatorSetId",
    )
    # A private pool: these names must never clash with a real `onnx` import in the same process.
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return message_factory.GetMessageClass(
        pool.FindMessageTypeByName("foldserve_onnx_header.ModelHeader")
    )


_ModelHeader = _build_model_header()


def default_opset(model_bytes: bytes) -> int:
    """Return the opset version of the default ONNX domain ("" or "ai.onnx"), 0 if absent.

    Raises:
        google.protobuf.message.DecodeError: the bytes are not a protobuf message.
    """
    header = _ModelHeader()
    header.ParseFromString(model_bytes)
    for entry in header.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return int(entry.version)
    return 0
