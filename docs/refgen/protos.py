"""The protos page: every service, RPC, message and field of proto/, with the comments the
.proto files give them, read through protoc's descriptors (grpc_tools, as `make proto` uses)."""

from __future__ import annotations

import tempfile
from pathlib import Path

from google.protobuf import descriptor_pb2
from grpc_tools import protoc

REPO = Path(__file__).resolve().parents[2]
PROTO = REPO / "proto"
# SourceCodeInfo paths are field numbers of the descriptor messages:
MESSAGES, SERVICES, ENUMS = 4, 6, 5  # in a file
FIELDS, NESTED, NESTED_ENUMS = 2, 3, 4  # in a message
METHODS, VALUES = 2, 2  # in a service, in an enum
LABELS = {descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED: "repeated "}
TYPES = {
    value: name.removeprefix("TYPE_").lower()
    for name, value in descriptor_pb2.FieldDescriptorProto.Type.items()
}


def _files() -> list[descriptor_pb2.FileDescriptorProto]:
    sources = sorted(str(p.relative_to(PROTO)) for p in PROTO.rglob("*.proto"))
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "set.pb"
        include = str(Path(protoc.__file__).parent / "_proto")
        args = ["protoc", f"-I{PROTO}", f"-I{include}", "--include_source_info"]
        code = protoc.main([*args, f"--descriptor_set_out={out}", *sources])
        assert code == 0, f"protoc failed on {sources}"
        found = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
    return list(found.file)


def _comments(file: descriptor_pb2.FileDescriptorProto) -> dict[tuple[int, ...], str]:
    return {
        tuple(loc.path): " ".join(loc.leading_comments.split())
        for loc in file.source_code_info.location
        if loc.leading_comments.strip()
    }


def _type(field: descriptor_pb2.FieldDescriptorProto, message) -> str:
    kind = field.type_name.lstrip(".") or TYPES[field.type]
    entry = next(
        (n for n in message.nested_type if n.options.map_entry and kind.endswith("." + n.name)),
        None,
    )
    if entry is not None:  # protoc writes map<K, V> as a repeated nested entry message
        key, value = (_type(f, entry) for f in entry.field)
        return f"map<{key}, {value}>"
    return LABELS.get(field.label, "") + kind


def _enum(enum, path, comments, prefix="") -> list[str]:
    lines = [f"#### enum {prefix}{enum.name}\n"]
    if path in comments:
        lines.append(comments[path] + "\n")
    lines += ["| value | number | what it is |", "| --- | ---: | --- |"]
    for index, value in enumerate(enum.value):
        text = _cell(comments.get((*path, VALUES, index), ""))
        lines.append(f"| `{value.name}` | {value.number} | {text} |")
    return [*lines, ""]


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")


def _message(message, path, comments, prefix="") -> list[str]:
    name = prefix + message.name
    lines = [f"#### {name}\n"]
    if path in comments:
        lines.append(comments[path] + "\n")
    if message.field:
        lines += ["| field | number | type | what it is |", "| --- | ---: | --- | --- |"]
        for index, field in enumerate(message.field):
            text = _cell(comments.get((*path, FIELDS, index), ""))
            oneof = ""
            if field.HasField("oneof_index"):
                oneof = f" (oneof `{message.oneof_decl[field.oneof_index].name}`)"
            kind = _type(field, message)
            lines.append(f"| `{field.name}` | {field.number} | `{kind}`{oneof} | {text} |")
        lines.append("")
    for index, nested in enumerate(message.nested_type):
        if not nested.options.map_entry:
            lines += _message(nested, (*path, NESTED, index), comments, f"{name}.")
    for index, enum in enumerate(message.enum_type):
        lines += _enum(enum, (*path, NESTED_ENUMS, index), comments, f"{name}.")
    return lines


def _file_section(file: descriptor_pb2.FileDescriptorProto) -> str:
    comments = _comments(file)
    lines = [f"## {file.name}\n", f"Package `{file.package}`.\n"]
    for s_index, service in enumerate(file.service):
        lines.append(f"### service {service.name}\n")
        if (SERVICES, s_index) in comments:
            lines.append(comments[(SERVICES, s_index)] + "\n")
        lines += ["| RPC | request | response | what it does |", "| --- | --- | --- | --- |"]
        for m_index, rpc in enumerate(service.method):
            text = _cell(comments.get((SERVICES, s_index, METHODS, m_index), ""))
            request = ("stream " * rpc.client_streaming) + rpc.input_type.lstrip(".")
            response = ("stream " * rpc.server_streaming) + rpc.output_type.lstrip(".")
            lines.append(f"| `{rpc.name}` | `{request}` | `{response}` | {text} |")
        lines.append("")
    if file.message_type or file.enum_type:
        lines.append("### Messages\n")
    for index, enum in enumerate(file.enum_type):
        lines += _enum(enum, (ENUMS, index), comments)
    for index, message in enumerate(file.message_type):
        lines += _message(message, (MESSAGES, index), comments)
    return "\n".join(lines)


def protos_page() -> str:
    """docs/reference/protos.md."""
    ours = [f for f in _files() if (PROTO / f.name).exists()]
    sections = "\n".join(_file_section(f) for f in ours)
    return (
        "# Protocol buffers\n\n"
        "Generated from `proto/` (`python docs/reference_pages.py`), the source of truth of the "
        "gRPC APIs; the server answers reflection, so `grpcurl describe` shows the same. "
        "`inference.*` keeps the names and field numbers of the KServe V2 (Open Inference "
        "Protocol) spec and Triton's extensions, so their clients work unchanged.\n\n" + sections
    )
