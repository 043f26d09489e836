"""Tensors in shared memory (Triton's system shared memory extension): inputs read from, and
requested outputs written to, regions registered with `core.shared_memory`.

A tensor is in shared memory when its parameters name a region:

- `shared_memory_region` (required): a registered region's name;
- `shared_memory_byte_size` (required): the bytes of the tensor's data, an input's exactly its
  datatype's size × its shape's element count, an output's at least that;
- `shared_memory_offset` (optional, default 0): where the data starts in the region.

An input in shared memory has no data in the request: its adapter gives `awaiting(...)` as its
data (the datatype and shape the request gave, no values), and the data plane reads the region
(the raw layout of `core.datatypes`) before it checks the request against the model. An output in
shared memory is written there once the model has run, only when every such output fits (no
half-written answer), and the answer carries its name, datatype, shape and these parameters, no
data (`InferResponse.in_shared_memory`). Every range is checked against its region; nothing is
read or written outside one. A call holds its regions (`Claim`) until its answer is written, so a
region unregistered meanwhile stays mapped until then.

Errors: INVALID_ARGUMENT naming the parameter ("inputs[0].parameters.shared_memory_byte_size:
..."), NOT_FOUND for a region that is not registered, UNIMPLEMENTED when the extension is off.
"""

from __future__ import annotations

import itertools
from collections.abc import Container, Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from foldserve.core.datatypes import Datatype, datatype_of, decode_raw, element_count, encode_raw
from foldserve.core.datatypes import named as named_datatype
from foldserve.core.errors import invalid
from foldserve.core.shared_memory import Region, SystemSharedMemory, object_name
from foldserve.core.types import (
    InferInput,
    InferRequest,
    InferResponse,
    Parameter,
    RequestedOutput,
)

REGION = "shared_memory_region"
OFFSET = "shared_memory_offset"
BYTE_SIZE = "shared_memory_byte_size"
KEYS = (REGION, OFFSET, BYTE_SIZE)


def names_shared_memory(parameters: Container[str]) -> bool:
    """Whether a tensor's parameters put it in shared memory (any of the three: one alone is an
    error the data plane reports)."""
    return any(key in parameters for key in KEYS)


def uses_shared_memory(request: InferRequest) -> bool:
    """Whether any input or requested output of `request` is in shared memory."""
    tensors = (*request.inputs, *request.outputs)
    return any(names_shared_memory(tensor.parameters) for tensor in tensors)


def awaiting(datatype: Datatype, shape: list[int], field: str) -> np.ndarray:
    """The data an adapter gives for an input in shared memory: an array of the datatype and shape
    the request gave that holds no values (one read-only zero seen through every index) until the
    data plane reads the region.

    Raises:
        RequestError: INVALID_ARGUMENT naming `field` for a shape numpy cannot hold.
    """
    try:
        return np.broadcast_to(np.zeros((), datatype.dtype), shape)
    except ValueError as exc:
        raise invalid(f"{field}: {shape} is no array shape ({exc})") from None


@dataclass(frozen=True)
class Place:
    """Where a tensor's bytes are: `byte_size` bytes from `offset` of a held region."""

    region: Region
    offset: int
    byte_size: int
    field: str  # how messages name the tensor's parameters: "inputs[0].parameters"

    @property
    def parameters(self) -> dict[str, Parameter]:
        """The parameters an answer gives an output written here."""
        return {REGION: self.region.status.name, OFFSET: self.offset, BYTE_SIZE: self.byte_size}


class Claim:
    """The regions one request names, held from its start until its answer is written (a context
    manager: leaving it lets them go).

    `request` is the request with its inputs in shared memory read, and the shared memory
    parameters gone from its tensors; `answer` writes the outputs.

    Raises:
        RequestError: see the module's errors.
    """

    def __init__(self, memory: SystemSharedMemory, request: InferRequest) -> None:
        self._memory = memory
        self._held: list[Region] = []
        self._outputs: dict[str, Place] = {}
        try:
            inputs = [self._input(tensor) for tensor in request.inputs]
            outputs = [self._output(output) for output in request.outputs]
        except BaseException:
            self.close()
            raise
        self.request = replace(request, inputs=inputs, outputs=outputs)

    def __enter__(self) -> Claim:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Let every held region go."""
        for region in self._held:
            self._memory.release(region)
        self._held.clear()

    def _hold(self, parameters: Mapping[str, Any], field: str) -> Place:
        where = f"{field}.parameters"
        self._memory.require(f"{where}.{REGION}")
        name = parameters.get(REGION)
        if type(name) is not str or not name:
            got = "none" if name is None else repr(name)[:80]
            raise invalid(f"{where}.{REGION}: expected the name of a registered region, got {got}")
        byte_size = _count(parameters, BYTE_SIZE, where, required=True)
        offset = _count(parameters, OFFSET, where, required=False)
        region = self._memory.acquire(name, f"{where}.{REGION}")
        self._held.append(region)
        size = region.status.byte_size
        if offset > size:
            raise invalid(
                f"{where}.{OFFSET}: {offset} is past the end of region {name!r} ({size} bytes)"
            )
        if offset + byte_size > size:
            raise invalid(
                f"{where}.{BYTE_SIZE}: {byte_size} bytes from offset {offset} run past the end of "
                f"region {name!r} ({size} bytes)"
            )
        return Place(region, offset, byte_size, where)

    def _input(self, tensor: InferInput) -> InferInput:
        if not names_shared_memory(tensor.parameters):
            return tensor
        place = self._hold(tensor.parameters, tensor.field)
        datatype = _fixed_size(named_datatype(tensor.datatype, f"{tensor.field}.datatype"), tensor)
        shape = list(tensor.data.shape)
        size = datatype.dtype.itemsize * element_count(shape)
        if place.byte_size != size:
            raise invalid(
                f"{place.field}.{BYTE_SIZE}: {place.byte_size} bytes, but input {tensor.name!r} "
                f"is {datatype.name} of shape {shape}: {size} bytes"
            )
        raw = place.region.read(place.offset, size, f"{place.field}.{REGION}")
        data = decode_raw(raw, datatype, shape, f"{place.field}.{REGION}")
        return replace(tensor, data=data, parameters=_without(tensor.parameters))

    def _output(self, output: RequestedOutput) -> RequestedOutput:
        if not names_shared_memory(output.parameters):
            return output
        self._outputs[output.name] = self._hold(output.parameters, output.field)
        return replace(output, parameters=_without(output.parameters))

    def answer(self, response: InferResponse) -> InferResponse:
        """`response`, its outputs in shared memory written there and marked so.

        Raises:
            RequestError: INVALID_ARGUMENT naming the parameter when an output is larger than
                its byte size, or two outputs would share bytes; nothing is written then.
        """
        if not self._outputs:
            return response
        writes = [
            (place, _output_bytes(name, response.outputs[name], place))
            for name, place in self._outputs.items()
        ]
        _check_apart(writes)
        for place, raw in writes:
            place.region.write(place.offset, raw, f"{place.field}.{REGION}")
        shared = {name: place.parameters for name, place in self._outputs.items()}
        return replace(response, in_shared_memory=shared)


def _count(parameters: Mapping[str, Any], key: str, where: str, required: bool) -> int:
    value = parameters.get(key)
    if value is None and not required:
        return 0
    if type(value) is not int or value < 0:
        got = "none" if value is None else repr(value)[:40]
        raise invalid(f"{where}.{key}: expected a number of bytes (an integer >= 0), got {got}")
    return value


def _without(parameters: Mapping[str, Parameter]) -> dict[str, Parameter]:
    return {key: value for key, value in parameters.items() if key not in KEYS}


def _fixed_size(datatype: Datatype, tensor: InferInput) -> Datatype:
    if datatype.dtype.kind in "OSUV":  # variable-size values have no raw size to check
        raise invalid(
            f"{tensor.field}.datatype: {datatype.name} inputs are not served in shared memory"
        )
    return datatype


def _output_bytes(name: str, array: np.ndarray, place: Place) -> bytes:
    if array.dtype.kind in "OSUV":
        raise invalid(f"{place.field}.{REGION}: output {name!r} cannot be written to shared memory")
    raw = encode_raw(array)
    if len(raw) > place.byte_size:
        datatype = datatype_of(array.dtype).name
        raise invalid(
            f"{place.field}.{BYTE_SIZE}: output {name!r} is {datatype} of shape "
            f"{list(array.shape)}: {len(raw)} bytes, more than the {place.byte_size} given"
        )
    return raw


def _check_apart(writes: list[tuple[Place, bytes]]) -> None:
    """Two outputs written over the same bytes of one shared memory object would leave neither:
    refused (regions of one object may overlap, so compare object offsets)."""
    spans = sorted(
        (
            (object_name(p.region.status.key), p.region.status.offset + p.offset, len(raw), p)
            for p, raw in writes
            if raw
        ),
        key=lambda span: span[:2],
    )
    for before, after in itertools.pairwise(spans):
        if before[0] == after[0] and before[1] + before[2] > after[1]:
            raise invalid(
                f"{after[3].field}.{OFFSET}: this output's bytes overlap those of "
                f"{before[3].field} (shared memory object {after[0]!r})"
            )
