"""The serving event loop: one asyncio loop (uvloop's where installed and asked for) running in a
thread of its own, on which every protocol's server and every call runs.

A call's work is short (a model run is 20–90 µs), so handlers run it inline on the loop, with
no hand-off to a thread. The process's main thread stays free for signals and the drain, and
reaches into the loop with `call`.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")
EVENT_LOOPS = ("uvloop", "asyncio")


def new_loop(kind: str) -> asyncio.AbstractEventLoop:
    """A new event loop of `kind`: "uvloop" (falls back to asyncio's where uvloop is missing)
    or "asyncio"."""
    if kind == "uvloop":
        try:
            import uvloop
        except ImportError:
            return asyncio.new_event_loop()
        return uvloop.new_event_loop()
    return asyncio.new_event_loop()


class LoopThread:
    """An event loop running forever in a daemon thread.

    Args:
        kind: "uvloop" or "asyncio" (`new_loop`).
        name: the thread's name.
    """

    def __init__(self, kind: str, name: str = "foldserve-loop") -> None:
        self.loop = new_loop(kind)
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def call(self, work: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run a coroutine on the loop and wait for its result (from any other thread)."""
        return asyncio.run_coroutine_threadsafe(work, self.loop).result(timeout)

    def stop(self) -> None:
        """Stop the loop, wait for its thread, close it."""
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10.0)
        if not self._thread.is_alive():
            self.loop.close()
