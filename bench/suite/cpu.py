"""CPU time and resident memory from the kernel's own accounting: a server's process tree, the
load generator.

A server's CPU is read from `/proc/<pid>/stat` (utime + stime, plus cutime + cstime for children
it has reaped) of the process and of every live descendant, so `foldserve serve --workers N`
counts all N workers. psutil would read the same files; two fields do not justify a dependency.
The resolution is one clock tick (10 ms): over a measurement of thousands of calls it is well
under 1% of the total. Resident memory is `/proc/<pid>/statm`'s resident pages, summed over the
same tree. Linux only; elsewhere `available()` is False and CPU figures are left out.
"""

from __future__ import annotations

import os
import resource
from pathlib import Path

PROC = Path("/proc")
TICK_SECONDS = 1.0 / os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 0.01
PAGE_BYTES = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
# Indices in the fields after the command name (`(comm)` may hold spaces): man 5 proc numbers
# them from 1 with pid and comm first, so field 4 (ppid) is index 1 here, fields 14-17 (utime,
# stime, cutime, cstime) are 11-14.
_PPID = 1
_TIMES = slice(11, 15)


def available() -> bool:
    """True where per-process CPU accounting can be read (Linux /proc)."""
    return (PROC / "self" / "stat").exists()


def _stat(pid: int) -> tuple[int, int] | None:
    """(ppid, CPU ticks) of a process, None if it is gone."""
    try:
        text = (PROC / str(pid) / "stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return int(fields[_PPID]), sum(int(value) for value in fields[_TIMES])


def _tree(root: int) -> list[tuple[int, int]]:
    """(pid, CPU ticks) of process `root` and of every live descendant; empty if `root` is gone."""
    stats: dict[int, tuple[int, int]] = {}
    for entry in os.scandir(PROC):
        if entry.name.isdigit():
            stat = _stat(int(entry.name))
            if stat is not None:
                stats[int(entry.name)] = stat
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in stats.items():
        children.setdefault(ppid, []).append(pid)
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        if pid in stats:
            found.append((pid, stats[pid][1]))
            todo.extend(children.get(pid, ()))
    return found


def descendants(root: int) -> list[int]:
    """Every live descendant process of `root` (its workers, their children)."""
    return [pid for pid, _ in _tree(root) if pid != root]


def tree_cpu_seconds(root: int) -> float:
    """CPU seconds used so far by process `root` and every live descendant.

    Returns 0.0 when `root` is gone.
    """
    return sum(ticks for _, ticks in _tree(root)) * TICK_SECONDS


def tree_rss_bytes(root: int) -> int:
    """Resident memory of process `root` and every live descendant, in bytes (0: it is gone)."""
    total = 0
    for pid, _ in _tree(root):
        try:
            resident = int((PROC / str(pid) / "statm").read_text().split()[1])
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue  # exited meanwhile
        total += resident * PAGE_BYTES
    return total


def rusage_seconds(usage: resource.struct_rusage) -> float:
    """User + system CPU seconds of a `wait4` rusage."""
    return usage.ru_utime + usage.ru_stime


def load_average() -> tuple[float, float, float]:
    """The 1, 5 and 15 minute load averages (what else was running on the machine)."""
    return os.getloadavg()
