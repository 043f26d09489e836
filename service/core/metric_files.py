"""A worker's metric values in prometheus_client's multiprocess files, without the series it has
dropped.

With `--workers N` every worker writes each series to files the supervisor merges
(`PROMETHEUS_MULTIPROC_DIR`, one file per metric type and worker). prometheus_client's own value
class (`prometheus_client.values.MultiProcessValue`) never forgets a series: its files keep
every label set ever written, its index keeps every key, and a module-level list keeps every
value object alive (to reset them after a fork). A model version loaded and unloaded leaves a
few hundred series behind in each worker — its request counters and latency histograms for
every RPC method — about 0.2 MB of file and 0.5 MB of the worker's heap, and the supervisor
reads and parses all of them at every scrape.

`MetricFiles` writes the same file format (so `prometheus_client.multiprocess` reads it and
`mark_process_dead` works unchanged) but counts, per series, the value objects that still
exist. A series whose last value object is gone (its label child was removed and nothing holds
it) is dead; when dead entries take more room than live ones (and at least `COMPACT_BYTES`),
the file is rewritten with the live ones only and swapped in with one rename, so a reader sees
the old file or the new one, never half of either. A series dropped and made again (a version
loaded again) starts from zero, as it does in one process.
"""

from __future__ import annotations

import mmap
import os
import struct
import threading
import warnings
from collections import deque
from collections.abc import Callable
from pathlib import Path

from prometheus_client import values
from prometheus_client.mmap_dict import mmap_key

INITIAL_BYTES = 1 << 16  # prometheus_client's first size of a file
COMPACT_BYTES = 1 << 18  # dead entries below this are left in place
_HEADER = 8  # int32 bytes used, 4 bytes of padding
_INT = struct.Struct("i")
_DOUBLES = struct.Struct("dd")


def _entry(key: str, value: float, timestamp: float) -> bytes:
    """One entry as prometheus_client lays it out: length, key padded to 8 bytes, value, time."""
    encoded = key.encode()
    padded = encoded + b" " * (8 - (len(encoded) + 4) % 8)
    return _INT.pack(len(encoded)) + padded + _DOUBLES.pack(value, timestamp)


def _entries(path: Path):
    from prometheus_client.mmap_dict import MmapedDict

    return MmapedDict.read_all_values_from_file(str(path))


class MetricFile:
    """One multiprocess file (`<type>_<pid>.db`), its entries by key, and which keys are live.

    Not thread safe: `MetricFiles` holds its lock around every call.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._positions: dict[str, int] = {}  # key -> offset of its value
        self._sizes: dict[str, int] = {}  # key -> bytes of its entry
        self.users: dict[str, int] = {}  # key -> value objects that exist
        self.dead = 0  # bytes of entries no value object uses
        self.compactions = 0
        self._map: mmap.mmap | None = None
        # A file left by an earlier process with this pid (pids are reused) keeps its values,
        # as prometheus_client would: its entries stay, used by no value object of ours.
        kept = {k: (v, t) for k, v, t, _ in _entries(path)} if path.exists() else {}
        self._open(kept)
        self.pinned = set(kept)

    @property
    def used(self) -> int:
        return self._used

    def _open(self, entries: dict[str, tuple[float, float]]) -> None:
        """Write `entries` to a new file, swap it in, and map it."""
        body = b"".join(_entry(k, *v) for k, v in entries.items())
        self._used = _HEADER + len(body)
        capacity = INITIAL_BYTES
        while capacity < self._used:
            capacity *= 2
        staging = self.path.with_name(self.path.name + ".new")  # not *.db: readers skip it
        with open(staging, "wb") as sink:
            sink.write(_INT.pack(self._used) + b"\0" * 4 + body)
            sink.truncate(capacity)
        os.replace(staging, self.path)
        if self._map is not None:
            self._map.close()
        with open(self.path, "r+b") as file:
            self._map = mmap.mmap(file.fileno(), capacity)  # it keeps a descriptor of its own
        self._capacity = capacity
        self._positions.clear()
        self._sizes.clear()
        position = _HEADER
        for key in entries:
            size = len(_entry(key, 0.0, 0.0))
            self._positions[key], self._sizes[key] = position + size - 16, size
            position += size
        self.dead = 0

    def claim(self, key: str) -> tuple[float, float]:
        """One more value object uses `key`; its stored (value, timestamp) (new: zeros)."""
        self.users[key] = self.users.get(key, 0) + 1
        position = self._positions.get(key)
        if position is None:
            self._append(key)
            return 0.0, 0.0
        if self.users[key] == 1 and key not in self.pinned:
            # A dead entry in use again starts from zero, as a series made again does in one
            # process (and as it would had the file been compacted in between).
            self.dead -= self._sizes[key]
            self.write(key, 0.0, 0.0)
            return 0.0, 0.0
        return _DOUBLES.unpack_from(self._map, position)

    def release(self, key: str) -> None:
        """A value object of `key` is gone; the last one makes the entry dead."""
        left = self.users[key] - 1
        if left:
            self.users[key] = left
            return
        del self.users[key]
        if key not in self.pinned:
            self.dead += self._sizes[key]

    def write(self, key: str, value: float, timestamp: float) -> None:
        self._map[self._positions[key] : self._positions[key] + 16] = _DOUBLES.pack(
            value, timestamp
        )

    def compact_if_worth_it(self) -> bool:
        """Rewrite the file without its dead entries when they outweigh the live ones."""
        if self.dead < COMPACT_BYTES or self.dead < self._used - self.dead:
            return False
        live = {
            k: _DOUBLES.unpack_from(self._map, self._positions[k])
            for k in (*self.pinned, *self.users)
        }
        self._open(live)
        self.compactions += 1
        return True

    def _append(self, key: str) -> None:
        entry = _entry(key, 0.0, 0.0)
        if self._used + len(entry) > self._capacity:
            self._capacity *= 2
            self._map.resize(self._capacity)  # the file grows with it
        self._map[self._used : self._used + len(entry)] = entry
        self._positions[key], self._sizes[key] = self._used + len(entry) - 16, len(entry)
        self._used += len(entry)
        self._map[0:4] = _INT.pack(self._used)

    def close(self) -> None:
        self._map.close()


class MetricFiles:
    """This process's multiprocess files in `folder`, and the value class writing to them.

    `install()` makes every prometheus_client metric created afterwards in this process store
    its values here; call it before any metric exists.
    """

    def __init__(self, folder: str | Path, pid: int | None = None) -> None:
        self.folder = Path(folder)
        self.pid = os.getpid() if pid is None else pid
        self.lock = threading.Lock()
        self.files: dict[str, MetricFile] = {}
        # Keys whose value object was freed, released at the next claim: a finalizer may run
        # while this thread holds the lock, so it only queues (deque appends are atomic).
        self.freed: deque[tuple[MetricFile, str]] = deque()
        self.value_class = _value_class(self)

    def install(self) -> None:
        values.ValueClass = self.value_class  # read by every metric child prometheus_client makes
        # prometheus_client warns that removing a series does nothing in multiprocess mode;
        # with these values it frees the series.
        warnings.filterwarnings("ignore", "Removal of labels has not been implemented")

    def file(self, prefix: str) -> MetricFile:
        found = self.files.get(prefix)
        if found is None:
            found = self.files[prefix] = MetricFile(self.folder / f"{prefix}_{self.pid}.db")
        return found

    def settle(self) -> None:
        """Release the freed keys, then compact the files worth it (lock held)."""
        touched = set()
        while self.freed:
            file, key = self.freed.popleft()
            file.release(key)
            touched.add(file)
        for file in touched:
            file.compact_if_worth_it()

    def close(self) -> None:
        with self.lock:
            for file in self.files.values():
                file.close()
            self.files.clear()


def _value_class(store: MetricFiles) -> Callable[..., object]:
    lock, freed = store.lock, store.freed

    class FileValue:
        """A value of one series, kept in memory and written through to its file."""

        _multiprocess = True
        __slots__ = ("__weakref__", "_file", "_key", "_timestamp", "_value")

        def __init__(
            self, typ, metric_name, name, labelnames, labelvalues, help_text, **kwargs
        ) -> None:
            mode = kwargs.get("multiprocess_mode", "")
            prefix = f"{typ}_{mode}" if typ == "gauge" else typ
            self._key = mmap_key(metric_name, name, labelnames, labelvalues, help_text)
            with lock:
                store.settle()
                self._file = store.file(prefix)
                self._value, self._timestamp = self._file.claim(self._key)

        def __del__(self) -> None:
            freed.append((self._file, self._key))

        def inc(self, amount: float) -> None:
            with lock:
                self._value += amount
                self._timestamp = 0.0
                self._file.write(self._key, self._value, 0.0)

        def set(self, value: float, timestamp: float | None = None) -> None:
            with lock:
                self._value, self._timestamp = value, timestamp or 0.0
                self._file.write(self._key, value, self._timestamp)

        def set_exemplar(self, exemplar) -> None:  # prometheus_client's multiprocess has none
            return

        def get(self) -> float:
            with lock:
                return self._value

        def get_exemplar(self) -> None:
            return None

    return FileValue
