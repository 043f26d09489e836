"""The system shared memory registry and tensors of the core (`core.shared_memory`,
`core.shared_tensors`) on plain files standing in for /dev/shm: mapping, the checks no client
can reach (a link, an object that shrinks, the bound on regions), and a region's life while a
call holds it."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from foldserve.core import shared_memory
from foldserve.core.datatypes import BY_NAME
from foldserve.core.errors import RequestError, Status
from foldserve.core.shared_memory import SystemSharedMemory, object_name
from foldserve.core.shared_tensors import BYTE_SIZE, OFFSET, REGION, Claim, awaiting
from foldserve.core.types import InferInput, InferRequest, InferResponse, RequestedOutput

SIZE = 3 * 4096


@pytest.fixture
def memory(tmp_path: Path) -> SystemSharedMemory:
    (tmp_path / "obj").write_bytes(bytes(range(256)) * (SIZE // 256))
    found = SystemSharedMemory(enabled=True, directory=tmp_path)
    yield found
    found.close()


def refused(action, status: Status = Status.INVALID_ARGUMENT) -> str:
    with pytest.raises(RequestError) as caught:
        action()
    assert caught.value.status is status, caught.value.message
    return caught.value.message


def test_a_region_reads_and_writes_its_own_bytes_at_any_offset(
    memory: SystemSharedMemory, tmp_path: Path
) -> None:
    memory.register("r", "/obj", 4100, 300)  # not on a page: mapped from the page before
    region = memory.acquire("r", "f")
    assert region.read(0, 4, "f") == bytes(range(4, 8))
    region.write(296, b"\xff" * 4, "f")
    memory.release(region)
    data = (tmp_path / "obj").read_bytes()
    assert data[4396:4400] == b"\xff" * 4 and data[4392:4396] == bytes(range(40, 44))
    assert data[4400] == 4400 % 256  # the byte after the region
    assert "outside region" in refused(lambda: region.read(290, 11, "f"))


@pytest.mark.parametrize("key", ["", "/", "/a/b", "/..", ".", "/x\0y", "/" + "n" * 256], ids=repr)
def test_keys_that_name_no_object_are_refused(key: str) -> None:
    assert refused(lambda: object_name(key)).startswith("key: ")


def test_keys_are_shm_open_names() -> None:
    assert object_name("/in") == object_name("in") == object_name("//in") == "in"


def test_a_link_or_a_directory_is_no_object(memory: SystemSharedMemory, tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_bytes(b"x" * 64)
    (tmp_path / "link").symlink_to(secret)
    (tmp_path / "dir").mkdir()
    assert "cannot open" in refused(lambda: memory.register("a", "/link", 0, 8))
    assert "cannot open" in refused(lambda: memory.register("a", "/dir", 0, 8))
    assert memory.status() == []


def test_an_object_that_shrank_is_refused_not_read(
    memory: SystemSharedMemory, tmp_path: Path
) -> None:
    memory.register("r", "/obj", 4096, 4096)
    os.truncate(tmp_path / "obj", 4096 + 100)  # its owner shrinks it under the mapping
    region = memory.acquire("r", "inputs[0].parameters.shared_memory_region")
    message = refused(lambda: region.read(0, 8, "inputs[0].parameters.shared_memory_region"))
    assert "shrank to 4196 bytes" in message
    memory.release(region)


def test_a_held_region_stays_mapped_until_released(memory: SystemSharedMemory) -> None:
    memory.register("r", "/obj", 0, 64)
    region = memory.acquire("r", "f")
    memory.unregister("r")
    assert memory.status() == []
    assert region.read(0, 4, "f") == bytes(range(4))  # the call goes on
    memory.register("r", "/obj", 64, 64)  # the name is free again
    memory.release(region)
    with pytest.raises(ValueError):  # the old mapping is gone now
        region.read(0, 4, "f")
    assert memory.status()[0].offset == 64


def test_the_regions_of_a_process_are_bounded(
    memory: SystemSharedMemory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(shared_memory, "MAX_REGIONS", 2)
    memory.register("a", "/obj", 0, 8)
    memory.register("b", "/obj", 0, 8)
    assert "2 regions" in refused(
        lambda: memory.register("c", "/obj", 0, 8), Status.RESOURCE_EXHAUSTED
    )
    memory.unregister()
    memory.register("c", "/obj", 0, 8)


def _request(inputs=(), outputs=()) -> InferRequest:
    return InferRequest("m", "", list(inputs), list(outputs))


def _shared(region: str, size: int, offset: int = 0) -> dict:
    return {REGION: region, BYTE_SIZE: size, OFFSET: offset}


def test_a_failed_claim_holds_nothing(memory: SystemSharedMemory) -> None:
    memory.register("r", "/obj", 0, 64)
    data = awaiting(BY_NAME["FP32"], [2], "inputs[0].shape")
    inputs = [
        InferInput("a", data, "FP32", "inputs[0]", _shared("r", 8)),
        InferInput("b", data, "FP32", "inputs[1]", _shared("nope", 8)),
    ]
    refused(lambda: Claim(memory, _request(inputs)), Status.NOT_FOUND)
    region = memory.acquire("r", "f")
    assert region.users == 1  # only this one
    memory.release(region)


def test_outputs_are_written_only_when_all_fit(memory: SystemSharedMemory, tmp_path: Path) -> None:
    memory.register("r", "/obj", 0, 64)
    before = (tmp_path / "obj").read_bytes()
    outputs = [
        RequestedOutput("a", "outputs[0]", _shared("r", 16)),
        RequestedOutput("b", "outputs[1]", _shared("r", 4, 32)),
    ]
    arrays = {"a": np.ones(4, np.float32), "b": np.ones(2, np.float32)}
    with Claim(memory, _request(outputs=outputs)) as claim:
        assert all(not o.parameters for o in claim.request.outputs)
        message = refused(lambda: claim.answer(InferResponse("m", "1", "", arrays)))
    assert message.startswith("outputs[1].parameters.shared_memory_byte_size: output 'b'")
    assert (tmp_path / "obj").read_bytes() == before
