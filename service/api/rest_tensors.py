"""V2 REST tensors ↔ numpy: an inference request's JSON (and Triton's binary tensor extension)
decoded into the data plane's `InferRequest`, and an `InferResponse` encoded back.

JSON data: an input's `data` is a JSON array, flat or nested, read in row-major order; its values
must be JSON values of the datatype: `true`/`false` for BOOL, integers in range for INT*/UINT*,
numbers for FP16/FP32/FP64 (FP16 is served in JSON too, where Triton takes it in binary only),
strings for BYTES (each element the string's UTF-8 bytes; binary data carries any bytes).
Outputs come back flat, row-major.

Binary data (Triton's `binary_tensor_data` extension): the body is the JSON header, whose length
the `Inference-Header-Content-Length` header gives, followed by the raw bytes of every input that
has the `binary_data_size` parameter, in input order (layout in `core.datatypes`; BYTES: each
element's 4-byte little-endian length, then its bytes). An output is
answered in binary when its `binary_data` parameter is true, or when it has none and the request's
`binary_data_output` parameter is true; the reply is then laid out the same way.

Shared memory (Triton's extension, `core.shared_tensors`): an input whose parameters name a region
has no data in the body; an output written to one is answered with those parameters, no data.

Decoding checks what the request says of itself (JSON types, datatype names, value counts and
ranges, byte counts); whether it fits the model is the data plane's check (`core.validate`). Every
error is INVALID_ARGUMENT naming the field ("inputs[0].data", "inputs[1].shape", ...).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from foldserve.api.json_fields import dumps, expect, load_json, parameters
from foldserve.api.json_strings import json_strings
from foldserve.api.json_values import json_values
from foldserve.core.datatypes import (
    Datatype,
    check_shape,
    datatype_of,
    decode_raw,
    element_count,
    encode_raw,
    named,
)
from foldserve.core.errors import invalid
from foldserve.core.shared_tensors import awaiting, names_shared_memory
from foldserve.core.types import InferInput, InferRequest, InferResponse, Parameter, RequestedOutput
from foldserve.core.validate import check_request_id

HEADER_LENGTH = "inference-header-content-length"
BINARY_SIZE = "binary_data_size"  # an input's (and a binary output's) parameter
BINARY_OUTPUT = "binary_data"  # a requested output's parameter
BINARY_OUTPUTS = "binary_data_output"  # the request's parameter: every output in binary
BINARY_PARAMETERS = frozenset({BINARY_SIZE, BINARY_OUTPUT, BINARY_OUTPUTS})


@dataclass(frozen=True)
class Encoding:
    """How the reply carries each output: binary or JSON (`binary`: the request's default,
    `outputs`: each named output's own choice)."""

    binary: bool
    outputs: Mapping[str, bool]

    def is_binary(self, name: str) -> bool:
        return self.outputs.get(name, self.binary)


def decode_request(
    body: bytes, header_length: int | None, model_name: str, model_version: str
) -> tuple[InferRequest, Encoding]:
    """The request as plain values, and how its reply carries each output.

    Args:
        body: the whole request body.
        header_length: the JSON header's length (`Inference-Header-Content-Length`), None when
            the body is JSON only.
        model_name, model_version: what the URL names.

    Raises:
        RequestError: INVALID_ARGUMENT naming the field.
    """
    if header_length is None:
        after = f"; binary data after it needs the {HEADER_LENGTH} header"
        header = load_json(body, "body", after)
    else:
        header = load_json(body[:header_length], "body")
    request = expect(header, dict, "a JSON object", "body")
    _agrees(request, "model_name", model_name)
    _agrees(request, "model_version", model_version)
    request_id = expect(request.get("id", ""), str, "a string", "id")
    check_request_id(request_id, "id")
    extra = parameters(request.get("parameters", {}), "parameters")
    binary = extra.get(BINARY_OUTPUTS, False)
    expect(binary, bool, "a boolean", f"parameters.{BINARY_OUTPUTS}")
    inputs = _inputs(request.get("inputs"), body, header_length)
    outputs, choices = _outputs(request.get("outputs", []))
    decoded = InferRequest(model_name, model_version, inputs, outputs, request_id, _own(extra))
    return decoded, Encoding(binary, choices)


def _agrees(request: dict, key: str, named_in_url: str) -> None:
    """A body may repeat what the URL names (KServe's client sends `model_name`), not contradict
    it."""
    given = expect(request.get(key, ""), str, "a string", key)
    if given and given != named_in_url:
        url = repr(named_in_url) if named_in_url else "none"
        raise invalid(f"{key}: {given!r} in the body, but the URL names {url}")


def _own(values: Mapping[str, Parameter]) -> dict[str, Parameter]:
    """Parameters without the binary extension's, which are this adapter's own."""
    return {key: value for key, value in values.items() if key not in BINARY_PARAMETERS}


def _inputs(tensors: Any, body: bytes, header_length: int | None) -> list[InferInput]:
    expect(tensors, list, "an array of input tensors", "inputs")
    offset = len(body) if header_length is None else header_length
    inputs = []
    for index, tensor in enumerate(tensors):
        decoded, offset = _input(tensor, f"inputs[{index}]", body, offset, header_length)
        inputs.append(decoded)
    if offset != len(body):
        raise invalid(
            f"body: {len(body) - offset} bytes of binary data after the last input's "
            f"({HEADER_LENGTH} {header_length}, body {len(body)} bytes); each input's "
            f"parameters.{BINARY_SIZE} must say how many bytes are its own"
        )
    return inputs


def _input(
    tensor: Any, where: str, body: bytes, offset: int, header_length: int | None
) -> tuple[InferInput, int]:
    """One input, and where the next input's binary data starts."""
    expect(tensor, dict, "an input tensor object", where)
    name = expect(tensor.get("name"), str, "a string", f"{where}.name")
    datatype = named(
        expect(tensor.get("datatype"), str, "a string", f"{where}.datatype"), f"{where}.datatype"
    )
    shape = _shape(tensor.get("shape"), f"{where}.shape")
    extra = parameters(tensor.get("parameters", {}), f"{where}.parameters")
    try:
        data, offset = _data(tensor, where, datatype, shape, extra, body, offset, header_length)
    except ValueError as exc:  # numpy holds no such shape ([0, 2**62]: no count check caught it)
        raise invalid(f"{where}.shape: {shape} is no array shape ({exc})") from None
    return InferInput(name, data, datatype.name, where, _own(extra)), offset


def _data(
    tensor: dict,
    where: str,
    datatype: Datatype,
    shape: list[int],
    extra: Mapping[str, Parameter],
    body: bytes,
    offset: int,
    header_length: int | None,
) -> tuple[np.ndarray, int]:
    """An input's values, from its JSON `data` or its binary data, and where the next input's
    binary data starts."""
    size_field = f"{where}.parameters.{BINARY_SIZE}"
    if names_shared_memory(extra):
        if "data" in tensor or BINARY_SIZE in extra:
            given = f"{where}.data" if "data" in tensor else size_field
            raise invalid(f"{given}: data given both in the request and in shared memory")
        return awaiting(datatype, shape, f"{where}.shape"), offset
    if BINARY_SIZE in extra:
        size = expect(extra[BINARY_SIZE], int, "a number of bytes", size_field)
        if "data" in tensor:
            raise invalid(f"{where}.data: data given both in JSON and as binary ({size_field})")
        end = _binary_end(size, size_field, body, offset, header_length)
        return decode_raw(body[offset:end], datatype, shape, size_field), end
    if "data" in tensor:
        return json_values(tensor["data"], datatype, shape, f"{where}.data"), offset
    raise invalid(
        f"{where}: no data for input {tensor.get('name')!r}; expected {element_count(shape)} "
        f"{datatype.name} values for shape {shape} in {where}.data, or {size_field} bytes of "
        "binary data"
    )


def _shape(value: Any, field: str) -> list[int]:
    expect(value, list, "an array of dimensions", field)
    for index, dim in enumerate(value):
        expect(dim, int, "an integer", f"{field}[{index}]")
    return check_shape(value, field)


def _binary_end(size: int, field: str, body: bytes, offset: int, header_length: int | None) -> int:
    if header_length is None:
        raise invalid(
            f"{field}: binary data, but no {HEADER_LENGTH} header says where the JSON ends"
        )
    if size < 0 or size > len(body) - offset:
        raise invalid(
            f"{field}: {size} bytes, but {len(body) - offset} bytes of binary data are left "
            f"after the JSON header ({HEADER_LENGTH} {header_length}, body {len(body)} bytes)"
        )
    return offset + size


def _outputs(requested: Any) -> tuple[list[RequestedOutput], dict[str, bool]]:
    expect(requested, list, "an array of requested outputs", "outputs")
    outputs, choices = [], {}
    for index, output in enumerate(requested):
        where = f"outputs[{index}]"
        expect(output, dict, "a requested output object", where)
        name = expect(output.get("name"), str, "a string", f"{where}.name")
        extra = parameters(output.get("parameters", {}), f"{where}.parameters")
        if BINARY_OUTPUT in extra:
            field = f"{where}.parameters.{BINARY_OUTPUT}"
            choices[name] = expect(extra[BINARY_OUTPUT], bool, "a boolean", field)
        outputs.append(RequestedOutput(name, where, _own(extra)))
    return outputs, choices


def encode_response(answer: InferResponse, encoding: Encoding) -> tuple[bytes, int | None]:
    """The reply body, and the JSON header's length when binary outputs follow it (else None)."""
    reply: dict[str, Any] = {"model_name": answer.model_name, "model_version": answer.model_version}
    if answer.id:
        reply["id"] = answer.id
    outputs, binaries = [], []
    for name, array in answer.outputs.items():
        output = {"name": name, "datatype": datatype_of(array.dtype).name, "shape": array.shape}
        if name in answer.in_shared_memory:  # written there: its parameters say where
            output["parameters"] = dict(answer.in_shared_memory[name])
        elif encoding.is_binary(name):
            raw = encode_raw(array)
            output["parameters"] = {BINARY_SIZE: len(raw)}
            binaries.append(raw)
        else:
            output["data"] = (
                json_strings(array, name) if array.dtype == object else array.ravel().tolist()
            )
        outputs.append(output)
    reply["outputs"] = outputs
    header = dumps(reply)
    if not binaries:
        return header, None
    return b"".join([header, *binaries]), len(header)
