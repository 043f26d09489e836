"""Triton's system shared memory extension, the registry: regions that clients on this host
register, each a name for a byte range of a POSIX shared memory object, mapped while registered.

A client creates the object (`shm_open`, /dev/shm/<name>), registers a region of it (name, key =
the object's name as `shm_open` takes it, offset, byte size), then names the region in an
inference request's tensor parameters instead of sending the tensor's bytes
(`core.shared_tensors`). Registration checks the range against the object's size and maps it;
unregistering unmaps it, or, while calls still use the region, lets the last of them unmap it:
calls hold a region (`acquire`, `release`) from the start of a request to its answer.

Each server process has its own registry (with `--workers N`, one per worker). Off unless the
server is started with `--shared-memory on`: then every operation answers UNIMPLEMENTED saying
how to turn it on.
"""

from __future__ import annotations

import mmap
import os
import stat
import threading
from dataclasses import dataclass
from pathlib import Path

from foldserve.core.errors import RequestError, Status, invalid, not_found

EXTENSION = "system_shared_memory"  # its name in ServerMetadata's extensions
SHM_DIR = Path("/dev/shm")  # where Linux keeps POSIX shared memory objects
MAX_REGIONS = 256  # each holds an open file: a bound per process
NAME_MAX = 255  # the longest object name the file system takes
TURN_ON = "start the server with --shared-memory on (or FOLDSERVE_SHARED_MEMORY=on)"


@dataclass(frozen=True)
class RegionStatus:
    """A registered region as its client registered it: `byte_size` bytes from `offset` of the
    shared memory object `key`."""

    name: str
    key: str
    offset: int
    byte_size: int


class Region:
    """One registered region, mapped. Reads and writes stay inside it; `SystemSharedMemory`
    unmaps it once it is unregistered and no call holds it."""

    def __init__(self, status: RegionStatus, mapping: mmap.mmap, start: int) -> None:
        self.status = status
        self._map = mapping
        self._start = start  # where the region starts in the mapping (mappings start on a page)
        self.users = 0
        self.retired = False

    def read(self, offset: int, size: int, field: str) -> bytes:
        """A copy of `size` bytes from `offset` of the region (checked by the caller)."""
        start = self._checked(offset, size, field)
        return self._map[start : start + size]

    def write(self, offset: int, data: bytes, field: str) -> None:
        """Write `data` at `offset` of the region (checked by the caller)."""
        start = self._checked(offset, len(data), field)
        self._map[start : start + len(data)] = data

    def _checked(self, offset: int, size: int, field: str) -> int:
        if offset < 0 or offset + size > self.status.byte_size:  # the callers' check, kept
            raise invalid(f"{field}: outside region {self.status.name!r}")
        # Touching a page past the object's end kills the process (SIGBUS): an object its
        # owner shrank since registration is refused, not read.
        end = self.status.offset + self.status.byte_size
        if self._map.size() < end:
            raise invalid(
                f"{field}: the shared memory object {self.status.key!r} of region "
                f"{self.status.name!r} shrank to {self._map.size()} bytes since it was registered "
                f"(the region ends at byte {end}); unregister it and register it again"
            )
        return self._start + offset

    def close(self) -> None:
        self._map.close()


class SystemSharedMemory:
    """The regions of one server process, by name.

    Args:
        enabled: `--shared-memory`; off, every operation raises UNIMPLEMENTED.
        directory: where the shared memory objects are (tests may point elsewhere).
    """

    def __init__(self, enabled: bool, directory: Path = SHM_DIR) -> None:
        self.enabled = enabled
        self._directory = directory
        self._regions: dict[str, Region] = {}
        self._lock = threading.Lock()

    def require(self, what: str) -> None:
        """Raises RequestError (UNIMPLEMENTED, naming `what`) when the extension is off."""
        if not self.enabled:
            raise RequestError(
                Status.UNIMPLEMENTED,
                f"{what}: system shared memory is off on this server; {TURN_ON}",
            )

    def status(self, name: str = "") -> list[RegionStatus]:
        """Every registered region ("": all), by name.

        Raises:
            RequestError: UNIMPLEMENTED when off; NOT_FOUND for a name not registered.
        """
        self.require("SystemSharedMemoryStatus")
        with self._lock:
            if not name:
                return [self._regions[n].status for n in sorted(self._regions)]
            return [self._named(name, "name").status]

    def register(self, name: str, key: str, offset: int, byte_size: int) -> None:
        """Map `byte_size` bytes from `offset` of the shared memory object `key` as region `name`.

        Raises:
            RequestError: UNIMPLEMENTED when off; INVALID_ARGUMENT naming the field for an empty
                or taken name, a key that names no object this process can open, a range outside
                the object; RESOURCE_EXHAUSTED past MAX_REGIONS.
        """
        self.require("SystemSharedMemoryRegister")
        if not name:
            raise invalid("name: required, the name requests will give the region")
        _check_range(offset, byte_size)
        path = self._directory / object_name(key)
        with self._lock:
            if name in self._regions:
                taken = self._regions[name].status
                raise invalid(
                    f"name: region {name!r} is already registered (key {taken.key!r}, offset "
                    f"{taken.offset}, byte_size {taken.byte_size}); unregister it first"
                )
            if len(self._regions) >= MAX_REGIONS:
                raise RequestError(
                    Status.RESOURCE_EXHAUSTED,
                    f"name: {MAX_REGIONS} regions are registered, the most one server process "
                    "holds; unregister some first",
                )
            mapping, start = _map(path, key, offset, byte_size)
            status = RegionStatus(name, key, offset, byte_size)
            self._regions[name] = Region(status, mapping, start)

    def unregister(self, name: str = "") -> None:
        """Unregister region `name` ("": every region); a name not registered is no error (as in
        Triton). A region that calls still hold is unmapped when the last of them is done.

        Raises:
            RequestError: UNIMPLEMENTED when off.
        """
        self.require("SystemSharedMemoryUnregister")
        self._drop(name)

    def close(self) -> None:
        """Unregister every region (the server stops)."""
        self._drop("")

    def acquire(self, name: str, field: str) -> Region:
        """Hold region `name` for a call: it stays mapped until `release`, even if unregistered.

        Raises:
            RequestError: NOT_FOUND naming `field` for a name not registered.
        """
        with self._lock:
            region = self._named(name, field)
            region.users += 1
            return region

    def release(self, region: Region) -> None:
        """A call is done with `region`."""
        with self._lock:
            region.users -= 1
            if region.retired and region.users == 0:
                region.close()

    def _named(self, name: str, field: str) -> Region:
        region = self._regions.get(name)
        if region is None:
            known = sorted(self._regions)
            shown = ", ".join(repr(n) for n in known[:8]) + (", ..." if len(known) > 8 else "")
            raise not_found(
                f"{field}: no shared memory region {name[:80]!r} is registered on this server "
                f"process (registered: {shown or 'none'})"
            )
        return region

    def _drop(self, name: str) -> None:
        with self._lock:
            for each in [n for n in self._regions if not name or n == name]:
                region = self._regions.pop(each)
                region.retired = True
                if region.users == 0:
                    region.close()


def object_name(key: str) -> str:
    """The file name of shared memory object `key` ("/name" or "name", as `shm_open` takes it).

    Raises:
        RequestError: INVALID_ARGUMENT for a key that is no plain object name.
    """
    name = key.lstrip("/")
    if not name or "/" in name or name in (".", "..") or "\0" in name:
        raise invalid(
            f"key: {key[:80]!r} is no shared memory object name; expected '/name' as shm_open "
            "takes it (one name, no other '/')"
        )
    if len(name.encode()) > NAME_MAX:
        raise invalid(
            f"key: {len(name.encode())} bytes; shared memory names have {NAME_MAX} at most"
        )
    return name


def _check_range(offset: int, byte_size: int) -> None:
    for field, value, least in (("offset", offset, 0), ("byte_size", byte_size, 1)):
        if type(value) is not int or value < least:
            raise invalid(f"{field}: expected an integer >= {least}, got {value!r}"[:200])


def _map(path: Path, key: str, offset: int, byte_size: int) -> tuple[mmap.mmap, int]:
    """The object's bytes [offset, offset + byte_size) mapped shared, read-write, and where the
    region starts in the mapping.

    Raises:
        RequestError: INVALID_ARGUMENT for an object that cannot be opened, is no regular
            object, or is too small for the range.
    """
    try:
        # O_NOFOLLOW: a link planted in the shared directory maps no file of the server's.
        fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise invalid(
            f"key: cannot open shared memory object {key!r} on this host ({exc.strerror}); the "
            "client creates it (shm_open, or tritonclient.utils.shared_memory) before it "
            "registers a region of it"
        ) from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise invalid(f"key: {key!r} is no shared memory object")
        if offset + byte_size > info.st_size:
            raise invalid(
                f"byte_size: offset {offset} + byte_size {byte_size} = {offset + byte_size}, past "
                f"the end of shared memory object {key!r} ({info.st_size} bytes)"
            )
        start = offset - offset % mmap.ALLOCATIONGRANULARITY
        try:
            mapping = mmap.mmap(fd, offset + byte_size - start, mmap.MAP_SHARED, offset=start)
        except OSError as exc:
            raise invalid(f"key: cannot map {byte_size} bytes of {key!r}: {exc.strerror}") from None
        return mapping, offset - start
    finally:
        os.close(fd)
