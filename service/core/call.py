"""What the core knows of one call: plain numbers and the series of the version that answers it."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from service.metrics import VersionMetrics


class Call:
    """One call as the core sees it.

    Attributes:
        started: when the call's handler started (`time.perf_counter`).
        deadline: when the caller stops waiting (`time.monotonic`), None for never.
        metrics: the series of the model version that answers it, once the request named one
            (set by `ModelRepository.resolve`); they record the call.
        data: the request's bytes as they arrived (b"" when not known), for decoders that read a
            packed field straight from them rather than through protobuf's container.
    """

    __slots__ = ("data", "deadline", "metrics", "started")

    def __init__(self, started: float, deadline: float | None, data: bytes = b"") -> None:
        self.started = started
        self.deadline = deadline
        self.metrics: VersionMetrics | None = None
        self.data = data
