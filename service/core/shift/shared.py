"""One monitor per model version, whatever the number of server processes: shared state.

With `foldserve serve --workers N` the kernel spreads connections over N processes. Each keeps
its own examples aside (`ShiftMonitor.observe`) and folds them, a batch at a time, into one
state per model version that every process maps: a file in a directory on a memory file system
(`/dev/shm` where there is one, as `multiprocessing.shared_memory` uses), opened by name and
mapped with `mmap`, each fold under an exclusive `flock` on it. So the tests see every
example, whichever process answered it, and an alarm needs as many calls with 8 workers as with
one.

Why a named file and not `multiprocessing.shared_memory` itself: that registers each segment
with a resource tracker that unlinks it when the process that attached it exits (Python 3.11),
so a worker that dies would take the state with it. A `flock` is released by the kernel when
its holder dies, so a worker killed mid-fold cannot leave the others waiting; the state keeps a
"being written" mark, and the next process to lock a state left half written rebuilds it (every
statistic back to 0, `rebuilt` counted). A restarted worker attaches to the same file by name
and goes on from the state as the others left it.

The supervisor creates the directory (`shared_state_dir`) and names it to its workers in
`FOLDSERVE_SHIFT_STATE_DIR` (`ShiftSettings.state_dir` reads it), before it starts them; the
directory goes when the supervisor stops. A file's name is a digest of everything that shapes
the state (the model file's hash, the reference, the tests), so a new version, or a changed
reference, gets a state of its own and a reload of the same file finds its state again.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import mmap
import os
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np

from foldserve.core.folders import shared_folder
from foldserve.core.shift.settings import SHIFT_STATE_DIR_ENV
from foldserve.core.shift.state import StateView, state_size

MEMORY_FS = "/dev/shm"
SUFFIX = ".shift-state"


def state_name(*parts: str) -> str:
    """The file name of the state that `parts` (what shapes it) describe."""
    digest = hashlib.sha256("\0".join(parts).encode()).hexdigest()[:32]
    return digest + SUFFIX


class SharedState:
    """A monitor's state in a file that several processes map; attach by name.

    Args:
        directory: the shared directory (`shared_state_dir`).
        name: the state's file name (`state_name`).
        tests: how many tests the state holds (its layout).
    """

    shared = True

    def __init__(self, directory: str, name: str, tests: int) -> None:
        self.tests = tests
        self.path = os.path.join(directory, name)
        self.where = self.path
        size = state_size(tests) * 8
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        self._thread_lock = threading.Lock()  # flock does not exclude threads sharing the fd
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX)
            try:
                if os.fstat(self._fd).st_size < size:
                    os.ftruncate(self._fd, size)  # new bytes read as 0: an invalid state
                self._map = mmap.mmap(self._fd, size)
                values = np.frombuffer(self._map, dtype=np.float64, count=size // 8)
                self.view = StateView.of(values, tests)
                if not self.view.valid(tests):
                    self.view.reset(tests)
            finally:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
        except BaseException:
            os.close(self._fd)
            raise
        # A monitor dropped without `close` (its version unloaded) still gives its fd back.
        self._release = weakref.finalize(self, os.close, self._fd)

    @contextmanager
    def locked(self) -> Iterator[StateView]:
        """The state, held exclusively among every process and thread that maps it. A state a
        dead process left half written is rebuilt first."""
        with self._thread_lock:
            fcntl.flock(self._fd, fcntl.LOCK_EX)
            try:
                if not self.view.valid(self.tests):
                    self.view.reset(self.tests)
                yield self.view
            finally:
                fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        """Unmap the state (the file stays for the other processes)."""
        with self._thread_lock:
            view, self.view = self.view, None  # type: ignore[assignment]
            del view
            # A snapshot's view may still be alive: then the mapping goes with it.
            with contextlib.suppress(BufferError):
                self._map.close()
            self._release()


@contextmanager
def shared_state_dir() -> Iterator[str]:
    """The supervisor's side: a fresh directory for its workers' shared monitor state, named
    in `FOLDSERVE_SHIFT_STATE_DIR` for the processes it starts from here on; removed, and the
    variable unset, on exit. When the variable is already set, that directory is used (and
    left in place).

    Use it around starting the workers, as `shared_metrics_dir` is:

        with shared_metrics_dir() as folder, shared_state_dir():
            supervisor = Supervisor(...)
    """
    parent = MEMORY_FS if os.path.isdir(MEMORY_FS) and os.access(MEMORY_FS, os.W_OK) else None
    with shared_folder(SHIFT_STATE_DIR_ENV, "foldserve-shift-", parent) as folder:
        yield folder
