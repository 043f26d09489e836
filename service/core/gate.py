"""Admission: a bound on calls in flight, and the drain, which refuses new calls and waits for
those inside.

The bound is ours, not grpcio's `maximum_concurrent_rpcs`: grpcio counts a call until its reply
has left, so a client that keeps exactly the limit in flight (sending the next call as soon as a
reply arrives) was refused now and then; here a slot frees when the handler returns. And a call
refused here is counted in the metrics like any other answer.
"""

from __future__ import annotations

import threading
import time

from foldserve.core.errors import RequestError, Status

DRAINING = "server is shutting down (draining); retry on another replica"


class Gate:
    """Admits up to `limit` calls (an open stream is one call for its whole life) until draining
    starts, and counts the calls inside for a graceful drain."""

    def __init__(self, limit: int | None = None) -> None:
        self._condition = threading.Condition()
        self._inside = 0
        self._limit = limit
        self.draining = False
        self.last_refused = 0.0

    @property
    def inside(self) -> int:
        return self._inside

    def enter(self, always: bool = False) -> None:
        """Admit one call (`always`: whatever the drain and the bound, a probe's call).

        Raises:
            RequestError: UNAVAILABLE once draining has started; RESOURCE_EXHAUSTED when `limit`
                calls are already inside.
        """
        with self._condition:
            if always:
                self._inside += 1
                return
            if self.draining:
                self.last_refused = time.monotonic()
                raise RequestError(Status.UNAVAILABLE, DRAINING)
            if self._limit is not None and self._inside >= self._limit:
                raise RequestError(
                    Status.RESOURCE_EXHAUSTED,
                    f"server busy: {self._inside} calls in flight, the limit "
                    "(--max-concurrent-rpcs); retry with backoff",
                )
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
