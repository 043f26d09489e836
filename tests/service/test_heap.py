"""Freed heap memory goes back to the operating system (service/core/heap.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from foldserve.core.heap import release_freed_memory

MIB = 2**20
BLOCK = bytes(range(256)) * 256  # 64 KiB: under glibc's mmap threshold, so taken from the heap


def _rss() -> int:
    return int(Path("/proc/self/statm").read_text().split()[1]) * 4096


def test_freed_heap_blocks_are_handed_back() -> None:
    if not Path("/proc/self/statm").exists() or not release_freed_memory():
        pytest.skip("needs glibc and /proc")
    blocks = [bytearray(BLOCK) for _ in range(1024)]  # 64 MiB, every page written
    pinned = bytearray(BLOCK)  # allocated last, so the heap cannot shrink from its top alone
    del blocks
    kept = _rss()
    assert release_freed_memory()
    assert kept - _rss() > 32 * MIB
    assert len(pinned) == len(BLOCK)
