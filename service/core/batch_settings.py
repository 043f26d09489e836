"""Micro-batching's settings (`foldserve serve --batching`), apart from the batcher so that reading
them costs no numpy."""

from __future__ import annotations

from dataclasses import dataclass

BATCH_MIN_IN_FLIGHT = 32  # calls in flight from which concurrent runs are batched
BATCH_MAX_EXAMPLES = 64  # examples per shared run at most


@dataclass(frozen=True)
class BatchSettings:
    """`foldserve serve --batching`: off, or on for `min_in_flight` calls in flight and more,
    at most `max_batch` examples per run."""

    enabled: bool = False
    min_in_flight: int = BATCH_MIN_IN_FLIGHT
    max_batch: int = BATCH_MAX_EXAMPLES
