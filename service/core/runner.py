"""Running one loaded model version for a request: what every model run shares, whichever API
asked — the deadline check, decode and compute timing, predicted-class counts and the covariate
shift monitor. One example runs through the thread's IO binding (`service.core.binding`); with
batching on and enough calls in flight, through the micro-batcher (`service.core.batcher`). It
knows no gRPC: times are numbers and failures are `RequestError`s.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from service.contract import LOGITS, TAPS
from service.core.batcher import Batcher, BatchSettings
from service.core.binding import BoundRuns
from service.core.call import Call
from service.core.errors import RequestError, Status
from service.core.model import Model
from service.core.monitor import ShiftMonitor, ShiftSettings
from service.metrics import VersionMetrics


class ModelRunner:
    """Runs one loaded model version.

    Args:
        model: the loaded, checked model.
        metrics: the series of this version.
        shift: the shift monitor's settings; it runs when on and the model was loaded with its
            taps (`Model.tapped_session`).
        batching: micro-batching (`service.core.batcher`); None or off: every call runs alone.
        in_flight: calls in flight now; batching is on while it is at least `min_in_flight`.
    """

    def __init__(
        self,
        model: Model,
        metrics: VersionMetrics,
        shift: ShiftSettings | None = None,
        batching: BatchSettings | None = None,
        in_flight: Callable[[], int] | None = None,
    ) -> None:
        self.model = model
        self.metrics = metrics
        self.monitor: ShiftMonitor | None = None
        if model.tapped_session is not None:
            self.monitor = ShiftMonitor.of(model.metadata, shift or ShiftSettings())
        if self.monitor is not None:
            metrics.watch_shift(self.monitor)
        tapped = self.monitor is not None
        names = (*model.output_names, TAPS) if tapped else model.output_names
        session = model.tapped_session if tapped else model.session
        self._bound = BoundRuns(session, model.input.name, model.input.shape, names)
        self.batcher: Batcher | None = None
        if batching is not None and batching.enabled and in_flight is not None:
            self.batcher = Batcher(lambda batch: model.run(batch, taps=tapped), batching.max_batch)
            self._batching_above = batching.min_in_flight
            self._in_flight = in_flight

    def run(self, batch: np.ndarray, call: Call) -> dict[str, np.ndarray]:
        """Run a validated batch for `call`.

        Args:
            batch: float32, [N, *input shape].
            call: the call, for its start time and deadline.

        Returns:
            Every model output by name, each float32 of shape [N, classes].

        Raises:
            RequestError: DEADLINE_EXCEEDED when the deadline passed before compute (checked per
                call, before it joins a shared run).
        """
        deadline = call.deadline
        if deadline is not None and time.monotonic() >= deadline:
            raise RequestError(Status.DEADLINE_EXCEEDED, "deadline exceeded before compute")
        metrics = self.metrics
        compute_start = time.perf_counter()
        metrics.decode.observe(compute_start - call.started)
        monitor, batcher = self.monitor, self.batcher
        if batcher is not None and self._in_flight() >= self._batching_above:
            outputs = batcher.run(batch)  # this call's rows of a run it may share
        elif batch.shape[0] == 1:
            outputs = self._bound.run(batch)  # one example: through this thread's binding
        else:
            outputs = self.model.run(batch, taps=monitor is not None)
        metrics.compute.observe(time.perf_counter() - compute_start)
        labels = outputs[LOGITS].argmax(axis=1)
        metrics.count_predictions(labels)
        if monitor is not None:
            monitor.observe(outputs.pop(TAPS), labels)
        return outputs
