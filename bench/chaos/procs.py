"""What /proc says about the server under test: its worker processes, which worker holds which
TCP connection, and resident memory (Linux only, like `--workers`)."""

from __future__ import annotations

import os
from pathlib import Path

from foldserve.bench.soak import rss_mb
from foldserve.bench.suite.cpu import descendants

__all__ = ["connections_of", "descendants", "rss_mb", "socket_inodes", "worker_of", "workers"]
LISTEN = "0A"


def socket_inodes(pid: int) -> set[int]:
    """Inodes of the sockets process `pid` holds open (empty once it is gone)."""
    found = set()
    try:
        entries = list(Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return found
    for entry in entries:
        try:
            target = os.readlink(entry)
        except OSError:
            continue
        if target.startswith("socket:["):
            found.add(int(target[8:-1]))
    return found


def _table(listening: bool) -> list[tuple[int, int, int]]:
    rows = []
    for name in ("tcp", "tcp6"):
        try:
            lines = Path(f"/proc/net/{name}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if (fields[3] == LISTEN) != listening:
                continue
            local = int(fields[1].rsplit(":", 1)[1], 16)
            remote = int(fields[2].rsplit(":", 1)[1], 16)
            rows.append((local, remote, int(fields[9])))
    return rows


def connections_of() -> list[tuple[int, int, int]]:
    """Every TCP connection not listening: (local port, remote port, inode)."""
    return _table(listening=False)


def workers(supervisor: int, port: int) -> list[int]:
    """The supervisor's descendants that listen on `port`: its serving workers."""
    listening = {inode for local, _, inode in _table(listening=True) if local == port}
    return [pid for pid in descendants(supervisor) if socket_inodes(pid) & listening]


def worker_of(pids: list[int], port: int) -> dict[int, int]:
    """For each client port connected to server `port`, the pid (of `pids`) holding its server
    side."""
    owner = {inode: pid for pid in pids for inode in socket_inodes(pid)}
    return {
        remote: owner[inode]
        for local, remote, inode in connections_of()
        if local == port and inode in owner
    }
