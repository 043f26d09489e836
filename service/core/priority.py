"""Background work (model control: loading a model, a candidate version) at a lower CPU
priority than the event loop that answers calls.

On two busy cores a thread that loads a model competes with the serving loop for a core, and
calls in flight wait out its time slices. Linux gives each thread its own nice value, so the
thread that does the loading can step aside: it still runs whenever a core is free.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

BACKGROUND_NICE = 10  # about a tenth of a core's share against a thread at 0, never starved


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
        return self._executor.submit(work, *args).result()

    def wrap(self, work: Callable[..., Any]) -> Callable[..., Any]:
        """`work`, run on the background thread whenever it is called."""
        return lambda *args: self.run(work, *args)
