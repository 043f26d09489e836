"""The parameters an inference request may carry, and what is done with each.

A parameter that would change the answer and that foldserve does not implement is refused with
INVALID_ARGUMENT naming it, never ignored; so is any parameter not listed here. Accepted:

- request `timeout`: microseconds the caller waits (Triton's), a deadline as gRPC's own;
- input `shared_memory_region`, `shared_memory_byte_size`, `shared_memory_offset`: the input's
  data is in a registered shared memory region;
- output `classification`: the top k classes instead of the tensor (Triton's classification
  extension); `shared_memory_*` as for inputs: the output is written into a region.

Refused by name, with the reason: Triton's sequence batching (`sequence_id`, `sequence_start`,
`sequence_end`: foldserve's models are stateless, a sequence would get stateless answers) and
`priority` (one queue). Protocol-level parameters (REST's `binary_data`, `binary_data_size`,
`binary_data_output`) are the adapter's and never reach the data plane.
"""

from __future__ import annotations

from collections.abc import Mapping

from foldserve.core.errors import invalid
from foldserve.core.types import InferRequest, Parameter

SHARED_MEMORY = frozenset(
    {"shared_memory_region", "shared_memory_byte_size", "shared_memory_offset"}
)
REQUEST = frozenset({"timeout"})
INPUT = SHARED_MEMORY
OUTPUT = SHARED_MEMORY | {"classification"}
_STATELESS = "foldserve serves stateless models, not sequences (Triton's sequence batching)"
NOT_IMPLEMENTED = {
    "sequence_id": _STATELESS,
    "sequence_start": _STATELESS,
    "sequence_end": _STATELESS,
    "priority": "foldserve has one queue; request priorities are not implemented",
}


def check(request: InferRequest) -> float | None:
    """Refuse every parameter not accepted where it stands; the request's timeout, in seconds
    (None: none given).

    Raises:
        RequestError: INVALID_ARGUMENT naming the parameter and what is accepted there.
    """
    _check(request.parameters, REQUEST, "parameters")
    for tensor in request.inputs:
        if tensor.parameters:
            _check(tensor.parameters, INPUT, f"{tensor.field}.parameters")
    for output in request.outputs:
        if output.parameters:
            _check(output.parameters, OUTPUT, f"{output.field}.parameters")
    timeout = request.parameters.get("timeout") if request.parameters else None
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, int) or timeout <= 0:
        raise invalid(f"parameters.timeout: {timeout!r}; expected a positive number of µs")
    return timeout / 1e6


def _check(given: Mapping[str, Parameter], accepted: frozenset[str], field: str) -> None:
    for name in given:
        if name in accepted:
            continue
        reason = NOT_IMPLEMENTED.get(name)
        if reason is not None:
            raise invalid(f"{field}.{name}: not implemented: {reason}")
        raise invalid(
            f"{field}.{name}: unknown parameter; foldserve accepts {sorted(accepted) or 'none'} "
            "here"
        )
