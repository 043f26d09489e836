"""Reloading the model repository off the request path: every `interval` seconds, and at once
when asked (SIGHUP)."""

from __future__ import annotations

import logging
import threading

from foldserve.core.repository import Repository

log = logging.getLogger(__name__)


class Reloader:
    """A daemon thread that refreshes the repository.

    Args:
        repository: what to refresh.
        interval: seconds between looks; 0: only when triggered.
    """

    def __init__(self, repository: Repository, interval: float) -> None:
        self._repository = repository
        self._interval = interval or None
        self._wake = threading.Event()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="foldserve-reload", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def trigger(self) -> None:
        """Look at the repository now (safe to call from a signal handler)."""
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
                self._repository.refresh()
            except Exception:  # a bug must not end reloading for the life of the server
                log.exception("model repository refresh failed")
