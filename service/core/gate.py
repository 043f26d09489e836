"""Admission: calls are let in until draining starts; the drain waits for those inside."""

from __future__ import annotations

import threading
import time

from service.core.errors import RequestError, Status

DRAINING = "server is shutting down (draining); retry on another replica"


class Gate:
    """Admits calls until draining starts, and counts the calls inside for a graceful drain."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._inside = 0
        self.draining = False
        self.last_refused = 0.0

    def enter(self) -> None:
        """Admit one call.

        Raises:
            RequestError: UNAVAILABLE once draining has started.
        """
        with self._condition:
            if self.draining:
                self.last_refused = time.monotonic()
                raise RequestError(Status.UNAVAILABLE, DRAINING)
            self._inside += 1

    def leave(self) -> None:
        with self._condition:
            self._inside -= 1
            if not self._inside:
                self._condition.notify_all()

    def start_draining(self) -> None:
        """Refuse every later call with UNAVAILABLE."""
        with self._condition:
            self.draining = True

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no admitted call is running; False if `timeout` seconds passed first."""
        with self._condition:
            return self._condition.wait_for(lambda: self._inside == 0, timeout)
