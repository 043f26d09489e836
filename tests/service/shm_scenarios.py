"""System shared memory scenarios driven through tritonclient, the same for `tritonclient.http` and
`tritonclient.grpc` (their APIs match): every function takes the client module and the server's
address and returns plain JSON values for the test to check.

`tritonclient.grpc` registers the same protobuf message names as foldserve, so it cannot be
imported into the test process: `python -m tests.service.shm_scenarios grpc ADDRESS SCENARIO`
runs a scenario in a child process and prints its result as JSON. This module imports nothing of
foldserve.

Every shared memory object a scenario creates is laid out [GUARD | region | GUARD], the guards
filled with FILL, and destroyed at its end; the result says whether every byte outside what the
server was asked to write is still as it was.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import tritonclient.utils.shared_memory as shm
from tritonclient.utils import InferenceServerException

GUARD = 64  # bytes before and after each region
FILL = 0xA5
HTTP_STATUS = {
    "400": "INVALID_ARGUMENT",
    "404": "NOT_FOUND",
    "429": "RESOURCE_EXHAUSTED",
    "501": "UNIMPLEMENTED",
}
DATATYPES = {
    "BOOL": np.bool_, "INT8": np.int8, "INT16": np.int16, "INT32": np.int32,
    "INT64": np.int64, "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32,
    "UINT64": np.uint64, "FP16": np.float16, "FP32": np.float32, "FP64": np.float64,
}  # fmt: skip
MODEL = "foldserve"  # the name every test model is served under


class Objects:
    """The shared memory objects of one scenario, each [GUARD | region | GUARD]."""

    def __init__(self) -> None:
        self.tag = f"fstest_{os.getpid()}_{uuid.uuid4().hex[:8]}"
        self.handles: dict[str, Any] = {}
        self.sizes: dict[str, int] = {}

    def key(self, name: str) -> str:
        return f"/{self.tag}_{name}"

    def create(self, name: str, size: int, guard: int = GUARD) -> str:
        """Create object `name` for a region of `size` bytes; its key."""
        total = guard + size + guard
        handle = shm.create_shared_memory_region(name, self.key(name), total)
        shm.set_shared_memory_region(handle, [np.full(total, FILL, np.uint8)])
        self.handles[name], self.sizes[name] = handle, total
        return self.key(name)

    def write(self, name: str, array: np.ndarray, offset: int) -> None:
        """Write `array` at `offset` of region `name` (after its guard)."""
        shm.set_shared_memory_region(
            self.handles[name], [np.ascontiguousarray(array)], GUARD + offset
        )

    def read(self, name: str, dtype: Any, shape: list[int], offset: int = 0) -> np.ndarray:
        return shm.get_contents_as_numpy(self.handles[name], dtype, shape, GUARD + offset).copy()

    def bytes_of(self, name: str) -> np.ndarray:
        return shm.get_contents_as_numpy(self.handles[name], np.uint8, [self.sizes[name]]).copy()

    def untouched(self, name: str, spans: list[tuple[int, int]] = ()) -> bool:
        """Whether every byte of object `name` outside `spans` ((offset in the region, size)) is
        still FILL."""
        data = self.bytes_of(name)
        keep = np.ones(data.size, bool)
        for offset, size in spans:
            keep[GUARD + offset : GUARD + offset + size] = False
        return bool((data[keep] == FILL).all())

    def destroy(self) -> None:
        for handle in self.handles.values():
            shm.destroy_shared_memory_region(handle)


@contextmanager
def objects(client: Any) -> Iterator[Objects]:
    """A scenario's objects, destroyed at its end, after its regions are unregistered."""
    made = Objects()
    try:
        yield made
    finally:
        error_of(client.unregister_system_shared_memory)
        made.destroy()


def error_of(action: Callable[[], Any]) -> dict[str, str] | None:
    """The error `action` raised, as {"status": canonical name, "message": ...}; None if none."""
    try:
        action()
    except InferenceServerException as exc:
        status = str(exc.status())
        status = HTTP_STATUS.get(status, status.removeprefix("StatusCode."))
        return {"status": status, "message": exc.message()}
    return None


def status_of(client: Any, name: str = "") -> list[dict[str, Any]]:
    """The registered regions as a list of {name, key, offset, byte_size}, from either client."""
    if "grpc" not in type(client).__module__:
        return client.get_system_shared_memory_status(name)
    regions = client.get_system_shared_memory_status(name, as_json=True).get("regions", {})
    return [
        {"name": r["name"], "key": r["key"], "offset": int(r.get("offset", 0)),
         "byte_size": int(r.get("byte_size", 0))}
        for r in regions.values()
    ]  # fmt: skip


def response_of(result: Any) -> dict[str, Any]:
    """An answer as JSON values, from either client (gRPC's int64 values are strings)."""
    if "grpc" not in type(result).__module__:
        return result.get_response()
    return result.get_response(as_json=True)


def values(datatype: str, shape: list[int], seed: int = 0) -> np.ndarray:
    """Values of every datatype, edges included."""
    dtype = np.dtype(DATATYPES[datatype])
    rng = np.random.default_rng(seed)
    if dtype.kind == "b":
        return rng.integers(0, 2, shape).astype(bool)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        array = rng.integers(info.min, info.max, shape, dtype=dtype, endpoint=True)
        array.flat[:2] = (info.min, info.max)
        return array
    return rng.normal(size=shape).astype(dtype)


def register(client: Any, made: Objects, name: str, size: int) -> None:
    client.register_system_shared_memory(name, made.key(name), size, GUARD)


def every_datatype(tc: Any, address: str) -> dict[str, Any]:
    """Every datatype in and out through shared memory (the every-datatype model: x_<T> ->
    y_<T>, [N, 3]), inputs packed in one region and outputs in another, 8 bytes apart; then
    status and unregistering."""
    client, shape = tc.InferenceServerClient(address), [2, 3]
    arrays = {name: values(name, shape, seed) for seed, name in enumerate(DATATYPES)}
    offsets, at = {}, 0
    for name, array in arrays.items():
        offsets[name], at = at, at + array.nbytes + 8
    with objects(client) as made:
        made.create("in", at), made.create("out", at)
        register(client, made, "in", at), register(client, made, "out", at)
        inputs, outputs = [], []
        for name, array in arrays.items():
            made.write("in", array, offsets[name])
            tensor = tc.InferInput(f"x_{name}", shape, name)
            tensor.set_shared_memory("in", array.nbytes, offsets[name])
            inputs.append(tensor)
            output = tc.InferRequestedOutput(f"y_{name}")
            output.set_shared_memory("out", array.nbytes + 8, offsets[name])
            outputs.append(output)
        status = status_of(client)
        answer = response_of(client.infer(MODEL, inputs, outputs=outputs))
        got = {n: made.read("out", a.dtype, shape, offsets[n]) for n, a in arrays.items()}
        spans = [(offsets[n], a.nbytes) for n, a in arrays.items()]
        result = {
            "status": status,
            "outputs": answer["outputs"],
            "equal": {n: bool(np.array_equal(got[n], a)) for n, a in arrays.items()},
            "untouched": {"in": made.untouched("in", spans), "out": made.untouched("out", spans)},
        }
        client.unregister_system_shared_memory("in")
        result["after_one"] = status_of(client)
        client.unregister_system_shared_memory()
        result["after_all"] = status_of(client)
    return result


def mixed(tc: Any, address: str) -> dict[str, Any]:
    """The masked model (x FP32 and mask BOOL [N, 4] -> out FP32 [N, 4], count INT64 [N]): x in
    shared memory and mask in the request; out to shared memory and count in the answer."""
    client = tc.InferenceServerClient(address)
    x, mask = values("FP32", [3, 4]), values("BOOL", [3, 4], 1)
    with objects(client) as made:
        made.create("x", x.nbytes), made.create("out", 100)
        register(client, made, "x", x.nbytes), register(client, made, "out", 100)
        made.write("x", x, 0)
        given_x = tc.InferInput("x", [3, 4], "FP32")
        given_x.set_shared_memory("x", x.nbytes)
        given_mask = tc.InferInput("mask", [3, 4], "BOOL")
        given_mask.set_data_from_numpy(mask)
        out, count = tc.InferRequestedOutput("out"), tc.InferRequestedOutput("count")
        out.set_shared_memory("out", 96, 4)
        result = client.infer(MODEL, [given_x, given_mask], outputs=[out, count])
        return {
            "out": bool(
                np.array_equal(made.read("out", np.float32, [3, 4], 4), np.where(mask, x, 0))
            ),
            "count": result.as_numpy("count").tolist(),
            "expected_count": mask.sum(axis=1).tolist(),
            "out_in_answer": next(o for o in response_of(result)["outputs"] if o["name"] == "out"),
            "untouched": made.untouched("out", [(4, x.nbytes)])
            and made.untouched("x", [(0, x.nbytes)]),
        }


def _infer(tc: Any, client: Any, region: str, size: int, offset: int = 0, rows: int = 2) -> Any:
    given = tc.InferInput("input", [rows, 64], "FP32")
    given.set_shared_memory(region, size, offset)
    return client.infer(MODEL, [given], outputs=[tc.InferRequestedOutput("logits")])


def _infer_out(tc: Any, client: Any, *places: tuple[str, str, int, int]) -> Any:
    """The tiny model on input region "in", outputs to `places` (output, region, size, offset)."""
    given = tc.InferInput("input", [2, 64], "FP32")
    given.set_shared_memory("in", 512)
    outputs = []
    for output, region, size, offset in places:
        outputs.append(tc.InferRequestedOutput(output))
        outputs[-1].set_shared_memory(region, size, offset)
    return client.infer(MODEL, [given], outputs=outputs)


def misuse(tc: Any, address: str) -> dict[str, Any]:
    """Every misuse, each answered with an error; then whether any byte outside the regions (and
    any byte of a region nothing was written to) changed."""
    client = tc.InferenceServerClient(address)
    http = "grpc" not in tc.__name__
    with objects(client) as made:
        made.create("in", 512), made.create("small", 40), made.create("out", 80)
        tiny_key = made.create("tiny", 64, guard=0)
        made.write("in", values("FP32", [2, 64]), 0)
        before = made.bytes_of("in")
        for name, size in (("in", 512), ("small", 40), ("out", 80)):
            register(client, made, name, size)
        client.register_system_shared_memory("gone", made.key("out"), 8)
        client.unregister_system_shared_memory("gone")
        rows = {
            "offset past the region": lambda: _infer(tc, client, "in", 512, 1024),
            "size past the region": lambda: _infer(tc, client, "in", 512, 8),
            "size not the tensor's": lambda: _infer(tc, client, "in", 512, rows=1),
            "negative offset": lambda: _infer(tc, client, "in", 512, -8),
            "negative size": lambda: _infer(tc, client, "in", -512),
            "huge size": lambda: _infer(tc, client, "in", 2**62),
            "unknown region": lambda: _infer(tc, client, "nope", 512),
            "unregistered region": lambda: _infer(tc, client, "gone", 512),
            "no such object": lambda: client.register_system_shared_memory(
                "x", made.key("missing"), 64
            ),
            "object too small": lambda: client.register_system_shared_memory("x", tiny_key, 128),
            "range past the object": lambda: client.register_system_shared_memory(
                "x", tiny_key, 8, 2**63
            ),
            "key no name": lambda: client.register_system_shared_memory("x", "/../etc/passwd", 8),
            "registered twice": lambda: register(client, made, "in", 512),
            "output region too small": lambda: _infer_out(tc, client, ("logits", "small", 40, 0)),
            "outputs overlap": lambda: _infer_out(
                tc, client, ("logits", "out", 80, 0), ("probabilities", "out", 80, 0)
            ),
        }
        if http:  # gRPC's register fields are unsigned: tritonclient refuses these itself
            rows["negative register offset"] = lambda: client.register_system_shared_memory(
                "x", tiny_key, 8, -1
            )
        errors = {row: error_of(action) for row, action in rows.items()}
        return {
            "errors": errors,
            "status": status_of(client),
            "input region unchanged": bool(np.array_equal(made.bytes_of("in"), before)),
            "untouched": {n: made.untouched(n) for n in ("small", "out", "tiny")},
        }


def off(tc: Any, address: str) -> dict[str, Any]:
    """A server with shared memory off: every operation and parameter refused, saying how to turn
    it on; not in ServerMetadata's extensions."""
    client = tc.InferenceServerClient(address)
    metadata = client.get_server_metadata()
    if not isinstance(metadata, dict):
        metadata = {"extensions": list(metadata.extensions)}
    return {
        "extensions": metadata["extensions"],
        "errors": {
            "status": error_of(lambda: client.get_system_shared_memory_status()),
            "register": error_of(lambda: client.register_system_shared_memory("r", "/r", 8)),
            "unregister": error_of(lambda: client.unregister_system_shared_memory()),
            "infer": error_of(lambda: _infer(tc, client, "r", 512)),
        },
    }


SCENARIOS = {f.__name__: f for f in (every_datatype, mixed, misuse, off)}


def main(argv: list[str]) -> int:
    protocol, address, scenario = argv
    tc = importlib.import_module(f"tritonclient.{protocol}")
    print(json.dumps(SCENARIOS[scenario](tc, address)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
