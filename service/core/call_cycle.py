"""The life of a call, the same for every protocol and operation: `admit` as the transport
accepts it (token, drain, in-flight bound), `begin` (size limit), the operation (`DataPlane`),
`finish` (status and duration in the metrics, the access log), `release`."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from foldserve.core.access import REQUEST_ID_HEADER, AccessLog, Headers, TokenCheck, header
from foldserve.core.call import Call
from foldserve.core.errors import RequestError, Status
from foldserve.core.gate import Gate
from foldserve.core.repository import Repository

log = logging.getLogger(__name__)

# Operations that probes call: no token, never refused for the in-flight bound, answered while
# draining (readiness then says "not ready").
PROBES = frozenset({"ServerLive", "ServerReady"})


@dataclass(frozen=True)
class CallPolicy:
    """What every call must pass before its operation runs.

    Attributes:
        max_message_bytes: the largest request message accepted.
        token: the bearer-token check, None when the APIs are open.
        access_log: where one line per call goes, None when off.
    """

    max_message_bytes: int
    token: TokenCheck | None = None
    access_log: AccessLog | None = None


class CallCycle:
    """Admission and accounting of calls (`DataPlane` adds the operations).

    Args:
        repository: the served models (their metric series are charged for the calls).
        gate: admission: the drain and the in-flight bound, shared by every protocol.
        policy: size limit, token, access log.
    """

    def __init__(self, repository: Repository, gate: Gate, policy: CallPolicy) -> None:
        self.repository = repository
        self.gate = gate
        self._policy = policy
        self._ready = True

    @property
    def max_message_bytes(self) -> int:
        """The largest request accepted (`--max-message-bytes`)."""
        return self._policy.max_message_bytes

    def stop_ready(self) -> None:
        """From now on, readiness says "not ready" (a drain has started)."""
        self._ready = False

    # --- the life of a call -------------------------------------------------------------------

    def admit(self, method: str, protocol: str, headers: Headers) -> None:
        """Admit a call (or a stream, for its whole life) as the transport accepts it: the bearer
        token, the drain and the in-flight bound (a probe, `PROBES`: none of them). Every
        admitted call is `release`d once.

        Raises:
            RequestError: UNAUTHENTICATED, UNAVAILABLE (draining) or RESOURCE_EXHAUSTED (too
                many calls in flight); the refusal is counted and logged.
        """
        if method in PROBES:
            self.gate.enter(always=True)
            return
        try:
            if self._policy.token is not None:
                self._policy.token.check(headers)
            self.gate.enter()
        except RequestError as error:
            self.finish(Call(method, protocol, time.perf_counter(), headers=lambda: headers), error)
            raise

    def release(self) -> None:
        """Free the slot of an admitted call that ended."""
        self.gate.leave()

    def begin(self, call: Call, size: int = 0) -> Call:
        """Start handling one admitted call (or one message of a stream) of `size` bytes.

        Raises:
            RequestError: RESOURCE_EXHAUSTED for a request over the size limit; counted.
        """
        limit = self._policy.max_message_bytes
        if size > limit:
            error = RequestError(
                Status.RESOURCE_EXHAUSTED,
                f"request: {size} bytes, over the limit of {limit} (--max-message-bytes)",
            )
            self.finish(call, error)
            raise error
        call.decode_started = time.perf_counter()
        return call

    def finish(self, call: Call, error: RequestError | None) -> None:
        """Record a call's answer: status and duration, the access log line."""
        code = "OK" if error is None else error.status.name
        if call.timing is not None:
            call.timing.end(error is None)
        elapsed = time.perf_counter() - call.started
        series = call.series
        if series is not None:
            series.in_flight.dec()
        else:
            series = self.repository.metrics.unresolved
        series.method(call.method).record(code, elapsed)
        access_log = self._policy.access_log
        if access_log is not None:
            request_id = call.request_id or header(call.headers(), REQUEST_ID_HEADER) or ""
            model = (series.model, series.version)
            access_log.write(
                call.method, call.protocol, code, elapsed, call.peer(), request_id, model
            )
        elif error is not None and log.isEnabledFor(logging.DEBUG):
            log.debug("%s -> %s: %s", call.method, code, error.message)

    def count_refusal(self, method: str, status: Status) -> None:
        """Count a call the transport refused before any operation (an unknown method)."""
        self.repository.metrics.unresolved.method(method).record(status.name, 0.0)
