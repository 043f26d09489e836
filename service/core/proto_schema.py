"""Protobuf message classes for a few fields of another schema, without its generated code.

The core reads and rewrites parts of ONNX files (the graph's outputs, a folded layer's weights)
but must not import `onnx` (a training dependency). A message class built from a handful of
field numbers parses just those fields and keeps every other one as unknown fields, which
serialize back byte for byte.
"""

from __future__ import annotations

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

FIELD = descriptor_pb2.FieldDescriptorProto

# A schema: message name -> [(field name, number, label, type, message type name or None)].
Schema = dict[str, list[tuple[str, int, int, int, str | None]]]


def message_classes(package: str, schema: Schema) -> dict[str, type]:
    """The message classes of `schema`, in a pool of their own under `package`."""
    file = descriptor_pb2.FileDescriptorProto(
        name=f"{package}.proto", package=package, syntax="proto2"
    )
    for name, fields in schema.items():
        message = file.message_type.add(name=name)
        for field_name, number, label, kind, type_name in fields:
            field = message.field.add(name=field_name, number=number, label=label, type=kind)
            if type_name:
                field.type_name = f".{package}.{type_name}"
    # A private pool: these names must never clash with a real `onnx` import in the same process.
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return {
        name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{package}.{name}"))
        for name in schema
    }
