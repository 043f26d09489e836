"""Give the heap's free memory back to the operating system after a model loads or unloads.

Loading a model (onnxruntime parsing the file, building its initializers, optimizing the graph)
allocates and frees a few times the model's size, mostly in blocks small enough for glibc to
take from the process's heap rather than map on their own; glibc keeps freed heap blocks for
later use, so the server stays resident that much above what it uses (a 98 MiB resnet50 added
271 MiB; after `malloc_trim`, 117 MiB: docs/benchmarks/repository-scale.md). glibc's
`malloc_trim(0)` hands every free page back. Where the C library has no such call (musl,
macOS) this does nothing. Unloading versions frees their sessions into the heap the same way,
so the repository also calls it after every refresh, load and unload (3 µs when there is nothing
to return).
"""

from __future__ import annotations

import ctypes


def _malloc_trim():
    try:
        return ctypes.CDLL(None).malloc_trim  # the C library this process already runs on
    except (OSError, AttributeError):
        return None


_MALLOC_TRIM = _malloc_trim()


def release_freed_memory() -> bool:
    """Hand the heap's free pages back to the operating system.

    Returns:
        True where the C library could be asked to (glibc), False elsewhere.
    """
    if _MALLOC_TRIM is None:
        return False
    _MALLOC_TRIM(0)
    return True
