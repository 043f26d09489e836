"""Background work (model control: loading a model, a candidate version) at a lower CPU
priority than the event loop that answers calls.

On two busy cores a thread that loads a model competes with the serving loop for a core, and
calls in flight wait out its time slices. Linux gives each thread its own nice value, so the
thread that does the loading can step aside: it still runs whenever a core is free.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

BACKGROUND_NICE = 10  # about a tenth of a core's share against a thread at 0, never starved
SWITCH_SECONDS = 0.0005


def lower_this_thread(niceness: int = BACKGROUND_NICE) -> None:
    """Run the calling thread at `niceness` (where the platform allows; else unchanged)."""
    with contextlib.suppress(OSError, AttributeError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), niceness)


class Background:
    """One low-priority thread that runs what it is given, in order."""

    def __init__(self) -> None:
        self._executor = ThreadPoolExecutor(1, "background", initializer=lower_this_thread)

    def run(self, work: Callable[..., Any], *args: Any) -> Any:
        """`work(*args)` on the background thread; its result, or its exception."""
        return self._executor.submit(switching_often, work, *args).result()

    def wrap(self, work: Callable[..., Any]) -> Callable[..., Any]:
        """`work`, run on the background thread whenever it is called."""
        return lambda *args: self.run(work, *args)


def switching_often(work: Callable[..., Any], *args: Any) -> Any:
    """`work(*args)` with the interpreter passing its lock between threads every
    `SWITCH_SECONDS` instead of every 5 ms: a call waiting on the serving loop then waits that
    long at most for background work that holds the lock (loading a model is mostly Python)."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(min(before, SWITCH_SECONDS))
    try:
        return work(*args)
    finally:
        sys.setswitchinterval(before)
