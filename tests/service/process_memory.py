"""Count a byte pattern in another process's writable memory (Linux, needs ptrace rights: root).

Why: to prove a server keeps no copy of its inputs (say, with the input reservoir off), a test
sends distinctive inputs, then looks for their exact bytes where a process keeps its data: the
heap, anonymous mappings and stacks, i.e. the readable *and writable* mappings of
/proc/PID/maps. Read-only mappings (code, shared libraries' text, model files mapped read-only)
cannot hold a copy made at run time, so they are skipped; so are [vvar] and [vsyscall], which
the kernel does not let /proc/PID/mem read. Shared writable mappings are scanned too (a copy
kept in shared memory is still kept), so a test must not hand the server inputs through a
shared memory region it then scans. Regions are read in bounded chunks, overlapping by
len(pattern) - 1 bytes so no match straddling a chunk boundary is lost and a process with a
multi-GB address space does not need a multi-GB buffer here. A region that vanishes or cannot
be read while we scan (the process keeps running) is skipped, not an error.

Freed memory is not zeroed: a request buffer the server released may still hold its bytes until
something reuses it, so a test must first make the server churn through enough other requests
(filler) before it asserts a count of 0.
"""

from __future__ import annotations

CHUNK = 16 << 20
SKIPPED = ("[vvar]", "[vvar_vclock]", "[vsyscall]")


def writable_regions(pid: int) -> list[tuple[int, int]]:
    """The (start, end) of every readable, writable mapping of process `pid`."""
    regions = []
    with open(f"/proc/{pid}/maps") as maps:
        for line in maps:
            fields = line.split(maxsplit=5)
            name = fields[5].strip() if len(fields) > 5 else ""
            if fields[1][:2] != "rw" or name in SKIPPED:
                continue
            start, end = (int(address, 16) for address in fields[0].split("-"))
            regions.append((start, end))
    return regions


def occurrences(pid: int, pattern: bytes) -> int:
    """How many times `pattern` occurs in the readable, writable memory of process `pid`
    (reads /proc/PID/maps and /proc/PID/mem; we run as root). Overlapping occurrences each
    count."""
    return counts(pid, [pattern])[pattern]


def counts(pid: int, patterns: list[bytes]) -> dict[bytes, int]:
    """`occurrences` of each pattern, in one pass over the process's memory."""
    if not patterns or not all(patterns):
        raise ValueError("no pattern, or an empty one")
    overlap = max(len(p) for p in patterns) - 1
    found = dict.fromkeys(patterns, 0)
    with open(f"/proc/{pid}/mem", "rb", buffering=0) as memory:
        for start, end in writable_regions(pid):
            position, tail = start, b""
            while position < end:
                try:
                    memory.seek(position)
                    chunk = memory.read(min(CHUNK, end - position))
                except (OSError, OverflowError, ValueError):
                    break
                if not chunk:
                    break
                data = tail + chunk
                for pattern in patterns:
                    # Only matches that end in the new chunk: the tail's were counted before.
                    at = data.find(pattern, max(len(tail) - len(pattern) + 1, 0))
                    while at != -1:
                        found[pattern] += 1
                        at = data.find(pattern, at + 1)
                tail = data[-overlap:] if overlap else b""
                position += len(chunk)
    return found
