"""One call as the data plane sees it: plain values from the adapter that received it, and what
the data plane learns while answering it."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from foldserve.core.metrics import VersionMetrics
    from foldserve.core.stats import InferTiming

NO_HEADERS: tuple[tuple[str, Any], ...] = ()


class Call:
    """One call (or one message of a stream).

    Given by the adapter:
        method: the protocol operation ("ModelInfer", "Predict", ...), the metrics' label.
        protocol: "grpc" or "http".
        started: when the adapter started handling it (`time.perf_counter`).
        deadline: when the caller stops waiting (`time.monotonic`), None for never.
        headers: reads the call's headers (gRPC metadata, HTTP headers) as (lower-case name,
            value) pairs; called only when something needs them (the token, the access log).
        peer: reads the caller's address, for the access log.

    Kept by the data plane (`core.dataplane`), never by anything it calls:
        decode_started: when admission ended and decoding began (`time.perf_counter`).
        series: the metric series of the version that answers it, once it named one.
        request_id: the caller's id for it (the request's, or the `x-request-id` header).
        timing: an inference call's marks for the statistics of the version it named.
    """

    __slots__ = (
        "deadline",
        "decode_started",
        "headers",
        "method",
        "peer",
        "protocol",
        "request_id",
        "series",
        "started",
        "timing",
    )

    def __init__(
        self,
        method: str,
        protocol: str,
        started: float,
        deadline: float | None = None,
        headers: Callable[[], Iterable[tuple[str, Any]]] = lambda: NO_HEADERS,
        peer: Callable[[], str] = str,
    ) -> None:
        self.method = method
        self.protocol = protocol
        self.started = started
        self.deadline = deadline
        self.headers = headers
        self.peer = peer
        self.decode_started = started
        self.series: VersionMetrics | None = None
        self.request_id = ""
        self.timing: InferTiming | None = None
