"""Noticing that the process which started this one is gone.

A parent killed outright (SIGKILL, the OOM killer, a test's teardown) cannot stop what it
started; the kernel gives the orphan a new parent, which is how one notices.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable

ORPHAN_CHECK_SECONDS = 0.5


def when_orphaned(parent: int, then: Callable[[], None]) -> None:
    """Call `then` (on a daemon thread) once `parent` is no longer this process's parent."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(ORPHAN_CHECK_SECONDS)
        then()

    threading.Thread(target=watch, name="orphan-watch", daemon=True).start()
