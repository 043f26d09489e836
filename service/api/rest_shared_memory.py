"""Triton's system shared memory extension over V2 REST: its routes and operations, a part of
`api/rest.py`'s adapter.

| verb | path | operation |
| --- | --- | --- |
| GET | `/v2/systemsharedmemory[/region/{name}]/status` | SystemSharedMemoryStatus |
| POST | `/v2/systemsharedmemory/region/{name}/register` | SystemSharedMemoryRegister |
| POST | `/v2/systemsharedmemory[/region/{name}]/unregister` | SystemSharedMemoryUnregister |

Register's body is `{"key": "/name", "offset": 0, "byte_size": 64}` (offset optional, 0); status
answers `[{"name": ..., "key": ..., "offset": ..., "byte_size": ...}, ...]`; the others answer
`{}`. The verbs are Triton's (and tritonclient's): status is a GET.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from foldserve.api.asgi import Reply
from foldserve.api.json_fields import dumps, expect, load_json

if TYPE_CHECKING:
    from foldserve.api.rest import Request
    from foldserve.core.call import Call
    from foldserve.core.dataplane import DataPlane
    from foldserve.core.shared_memory import RegionStatus

# action -> (verb, operation)
ACTIONS = {
    "status": ("GET", "SystemSharedMemoryStatus"),
    "register": ("POST", "SystemSharedMemoryRegister"),
    "unregister": ("POST", "SystemSharedMemoryUnregister"),
}
_PATH = re.compile(r"/v2/systemsharedmemory(?:/region/([^/]+))?/(status|register|unregister)")


def shared_memory_route(path: str) -> tuple[str, str, str] | None:
    """(verb, operation, region name or "") of a shared memory path; None for another path."""
    found = _PATH.fullmatch(path)
    if found is None:
        return None
    name, action = found.groups()
    verb, method = ACTIONS[action]
    return verb, method, name or ""


class SharedMemoryOperations:
    """The adapter's shared memory operations (the URL's region name is `request.name`)."""

    _plane: DataPlane

    def SystemSharedMemoryStatus(self, request: Request, call: Call) -> Reply:
        regions = self._plane.shared_memory_status(call, request.name)
        return Reply(dumps([_status(r) for r in regions]))

    def SystemSharedMemoryRegister(self, request: Request, call: Call) -> Reply:
        body = load_json(request.body, "body") if request.body.strip() else None
        asked = expect(
            body, dict, 'an object: {"key": ..., "offset": ..., "byte_size": ...}', "body"
        )
        key = expect(asked.get("key"), str, "a shared memory object name", "key")
        offset = expect(asked.get("offset", 0), int, "an integer", "offset")
        byte_size = expect(asked.get("byte_size"), int, "an integer", "byte_size")
        self._plane.shared_memory_register(call, request.name, key, offset, byte_size)
        return Reply(dumps({}))

    def SystemSharedMemoryUnregister(self, request: Request, call: Call) -> Reply:
        self._plane.shared_memory_unregister(call, request.name)
        return Reply(dumps({}))


def _status(region: RegionStatus) -> dict[str, Any]:
    return {
        "name": region.name,
        "key": region.key,
        "offset": region.offset,
        "byte_size": region.byte_size,
    }
