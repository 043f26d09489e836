"""Giving the memory of unloaded model versions back to the system.

An unloaded version's onnxruntime session and arrays are freed, but glibc's allocator keeps
freed memory in its heaps for reuse, so a server that loads and unloads versions grows by ten
or twenty megabytes (per process) before it levels off. `trim` asks glibc to return what it
holds unused (`malloc_trim`); it costs microseconds when there is nothing to return. Elsewhere
(musl, macOS) it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util

_trim = None
try:
    _trim = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    _trim.argtypes, _trim.restype = [ctypes.c_size_t], ctypes.c_int
except (OSError, AttributeError):  # no glibc
    _trim = None


def trim() -> None:
    """Return the allocator's unused memory to the system (glibc; elsewhere nothing)."""
    if _trim is not None:
        _trim(0)
