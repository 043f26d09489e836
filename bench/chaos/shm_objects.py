"""Shared memory objects for the `shm` rows, laid out [GUARD | region | GUARD] with the guards
filled with CANARY, so a row can tell whether anything outside a region was read or written;
and a process of its own that owns an object the caller did not create.

    python -m foldserve.bench.chaos.shm_objects NAME SIZE SEED

creates /dev/shm/NAME ([GUARD | SIZE bytes of FP32 values from SEED | GUARD]), prints "ready",
then obeys its stdin a line at a time: "shrink" (truncate it to 0 bytes), "unlink", "check"
(prints whether its guards are still whole), "exit".
"""

from __future__ import annotations

import mmap
import os
import random
import struct
import sys
from pathlib import Path

SHM = Path("/dev/shm")
GUARD = 4096
CANARY = 0xA5


class ShmObject:
    """/dev/shm/`name`: `size` bytes between two guards, mapped read-write."""

    def __init__(self, name: str, size: int) -> None:
        self.name, self.size = name, size
        self.path = SHM / name
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.ftruncate(fd, GUARD + size + GUARD)
            self.map = mmap.mmap(fd, GUARD + size + GUARD)
        finally:
            os.close(fd)
        self.map[:] = bytes([CANARY]) * len(self.map)

    @property
    def key(self) -> str:
        return "/" + self.name

    def write(self, data: bytes, offset: int = 0) -> None:
        self.map[GUARD + offset : GUARD + offset + len(data)] = data

    def read(self, size: int, offset: int = 0) -> bytes:
        return self.map[GUARD + offset : GUARD + offset + size]

    def guards_whole(self) -> bool:
        """Whether every guard byte is still CANARY (nothing written outside the region)."""
        whole = bytes([CANARY]) * GUARD
        return self.map[:GUARD] == whole and self.map[GUARD + self.size :] == whole

    def close(self) -> None:
        self.map.close()
        self.path.unlink(missing_ok=True)


def values(size: int, seed: int) -> bytes:
    """`size` bytes of FP32 values in [0, 16), from `seed` (no numpy: the owner process starts
    quickly)."""
    draw = random.Random(seed)
    return struct.pack(f"<{size // 4}f", *(draw.uniform(0, 16) for _ in range(size // 4)))


def main(argv: list[str]) -> int:
    name, size, seed = argv[0], int(argv[1]), int(argv[2])
    owned = ShmObject(name, size)
    owned.write(values(size, seed))
    print("ready", flush=True)
    for line in sys.stdin:
        command = line.strip()
        if command == "shrink":
            os.truncate(owned.path, 0)
        elif command == "unlink":
            owned.path.unlink(missing_ok=True)
        elif command == "check":
            print("whole" if owned.guards_whole() else "broken", flush=True)
            continue
        elif command == "exit":
            break
        print("done", flush=True)
    owned.path.unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
