"""Running one loaded model version for a request: what every model run shares, whichever API
asked — the deadline check, decode and compute timing, predicted-class counts and the input shift
monitor. It knows no gRPC: times are numbers and failures are `RequestError`s.
"""

from __future__ import annotations

import time

import numpy as np

from service.contract import LOGITS
from service.core.call import Call
from service.core.errors import RequestError, Status
from service.core.model import Model
from service.core.shift import InputShiftMonitor
from service.metrics import VersionMetrics


class ModelRunner:
    """Runs one loaded model version.

    Args:
        model: the loaded, checked model.
        metrics: the series of this version.
    """

    def __init__(self, model: Model, metrics: VersionMetrics) -> None:
        self.model = model
        self.metrics = metrics
        self._shift = InputShiftMonitor.of(model.metadata.input_bn, model.input.shape)
        if self._shift is not None:
            metrics.watch_input_shift(self._shift.score)

    def run(self, batch: np.ndarray, call: Call) -> dict[str, np.ndarray]:
        """Run a validated batch for `call`.

        Args:
            batch: float32, [N, *input shape].
            call: the call, for its start time and deadline.

        Returns:
            Every model output by name, each float32 of shape [N, classes].

        Raises:
            RequestError: DEADLINE_EXCEEDED when the deadline passed before compute.
        """
        deadline = call.deadline
        if deadline is not None and time.monotonic() >= deadline:
            raise RequestError(Status.DEADLINE_EXCEEDED, "deadline exceeded before compute")
        metrics = self.metrics
        compute_start = time.perf_counter()
        metrics.decode.observe(compute_start - call.started)
        outputs = self.model.run(batch)
        metrics.compute.observe(time.perf_counter() - compute_start)
        metrics.count_predictions(outputs[LOGITS].argmax(axis=1))
        if self._shift is not None:
            self._shift.observe(batch)
        return outputs
