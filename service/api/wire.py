"""Strict parsing of request bytes: what grpcio's default deserializer lets through, we refuse.

grpcio answers bytes that do not parse with INTERNAL ("Exception deserializing request!") before
any code of ours runs, and protobuf keeps a field sent with the wrong wire type (a string field
sent as a number, say) as an unknown field, so the request looks valid with that field empty. Here
both are INVALID_ARGUMENT with a message naming the field. Unknown field *numbers* are ignored,
as proto3 wants (a newer client may send fields this server does not know).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import DecodeError, Message
from google.protobuf.unknown_fields import UnknownFieldSet

from foldserve.core.errors import invalid

WIRE_TYPES = {0: "varint", 1: "64-bit", 2: "length-delimited", 5: "32-bit"}


def parser(message_type: type[Message]) -> Callable[[bytes], Any]:
    """A function that parses request bytes into `message_type`, strictly.

    Raises (from the returned function):
        RequestError: INVALID_ARGUMENT for bytes that are no such message, or a known field sent
            with the wrong wire type.
    """
    descriptor = message_type.DESCRIPTOR
    name = descriptor.full_name
    # A message without message fields has all its unknown fields in one place: cheap to check.
    flat = not any(f.type == FieldDescriptor.TYPE_MESSAGE for f in descriptor.fields)

    def parse(data: bytes) -> Any:
        try:
            request = message_type.FromString(data)
        except (DecodeError, RuntimeError, ValueError) as exc:
            raise invalid(
                f"request: {len(data)} bytes that are not a valid {name} message ({exc})"
            ) from None
        if flat:
            unknown = UnknownFieldSet(request)
            if len(unknown):
                _check_wire_types(request)
            return request
        size = request.ByteSize()
        request.DiscardUnknownFields()
        if request.ByteSize() != size:
            _check_wire_types(message_type.FromString(data))
        return request

    return parse


def leading_record(data: bytes, field_number: int) -> tuple[int, int] | None:
    """Where a length-delimited field that opens the message bytes lies: (offset, length), or
    None when `data` does not start with field `field_number` as length-delimited.

    Serializers write fields in number order, so a packed field numbered 1 opens the message;
    after a strict parse, a record holding all of the field's values is what protobuf decoded
    (a packed repeated field is the concatenation of every record of it, in order).
    """
    if not data or data[0] != (field_number << 3 | 2) or field_number > 15:
        return None
    length, shift, offset = 0, 0, 1
    while offset < len(data) and shift < 35:
        byte = data[offset]
        length |= (byte & 0x7F) << shift
        offset += 1
        if not byte & 0x80:
            return (offset, length) if offset + length <= len(data) else None
        shift += 7
    return None


def _check_wire_types(request: Message) -> None:
    for path, message in _messages(request, ""):
        known = message.DESCRIPTOR.fields_by_number
        for field in UnknownFieldSet(message):
            declared = known.get(field.field_number)
            if declared is not None:
                raise invalid(
                    f"{_join(path, declared.name)}: field {field.field_number} sent as "
                    f"{WIRE_TYPES.get(field.wire_type, field.wire_type)}, which is not how "
                    f"{_type_name(declared)} is encoded"
                )


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _messages(message: Message, path: str) -> Iterator[tuple[str, Message]]:
    """Every message in the tree of `message`, with its path ("inputs[0].contents"; "" for the
    request itself)."""
    yield path, message
    for field, value in message.ListFields():
        if field.type != FieldDescriptor.TYPE_MESSAGE:
            continue
        where = _join(path, field.name)
        if _is_map(field.message_type):
            for key, item in value.items():
                if isinstance(item, Message):
                    yield from _messages(item, f"{where}[{key!r}]")
        elif field.is_repeated:
            for index, item in enumerate(value):
                yield from _messages(item, f"{where}[{index}]")
        else:
            yield from _messages(value, where)


def _is_map(descriptor: Descriptor) -> bool:
    return descriptor.GetOptions().map_entry


def _type_name(field: FieldDescriptor) -> str:
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        return f"a {field.message_type.name} message"
    names = {v: k for k, v in vars(FieldDescriptor).items() if k.startswith("TYPE_")}
    return f"a {names[field.type].removeprefix('TYPE_').lower()} field"
