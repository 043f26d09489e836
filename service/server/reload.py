"""Looking for changes off the request path: every `interval` seconds, and at once when asked
(SIGHUP). The model repository and the TLS and token files (`credentials`) each have one."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)


class Reloader:
    """A daemon thread that calls `refresh`.

    Args:
        refresh: what to do at each look (the model repository's `refresh`, say).
        interval: seconds between looks; 0: only when triggered.
        what: what is refreshed, for the thread's name and the log.
    """

    def __init__(
        self, refresh: Callable[[], None], interval: float, what: str = "model repository"
    ) -> None:
        self._refresh = refresh
        self._interval = interval or None
        self._what = what
        self._wake = threading.Event()
        self._stopped = threading.Event()
        name = "foldserve-reload-" + what.replace(" ", "-")
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def trigger(self) -> None:
        """Look now (safe to call from a signal handler)."""
        self._wake.set()

    def stop(self) -> None:
        self._stopped.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(5.0)

    def _run(self) -> None:
        while True:
            self._wake.wait(self._interval)
            self._wake.clear()
            if self._stopped.is_set():
                return
            try:
                self._refresh()
            except Exception:  # a bug must not end reloading for the life of the server
                log.exception("%s refresh failed", self._what)
