"""Running the model for a request: what every model run shares, whichever API asked.

The deadline check, decode and compute timing, predicted-class counts and the input shift
monitor. It knows no gRPC: times are numbers (`time.perf_counter` for the start of a call,
`time.monotonic` for its deadline), and failures are `RequestError`s.
"""

from __future__ import annotations

import time

import numpy as np

from service.contract import LOGITS
from service.core.errors import RequestError, Status, not_found
from service.core.model import Model
from service.core.shift import InputShiftMonitor
from service.metrics import Metrics


class ModelRunner:
    """Runs one loaded model for the API adapters.

    Args:
        model: the loaded, checked model.
        metrics: the server's metrics.
    """

    def __init__(self, model: Model, metrics: Metrics) -> None:
        self.model = model
        self._metrics = metrics
        self._shift = InputShiftMonitor.of(model.metadata.input_bn, model.input.shape)
        if self._shift is not None:
            metrics.watch_input_shift(self._shift.score)

    def resolve(self, name: str, version: str, name_field: str, version_field: str) -> Model:
        """The model a request names: empty name/version mean the served one.

        Raises:
            RequestError: NOT_FOUND naming `name_field` or `version_field`.
        """
        model = self.model
        if name and name != model.name:
            raise not_found(
                f"{name_field}: unknown model {name!r}; this server serves {model.name!r}"
            )
        if version and version != model.version:
            raise not_found(
                f"{version_field}: unknown version {version!r} of model {model.name!r}; "
                f"the served version is {model.version!r}"
            )
        return model

    def run(
        self, batch: np.ndarray, started: float, deadline: float | None
    ) -> dict[str, np.ndarray]:
        """Run a validated batch for a call that started at `started` (perf_counter).

        Args:
            batch: float32, [N, *input shape].
            started: when the call's handler started (`time.perf_counter`).
            deadline: when the caller stops waiting (`time.monotonic`), None for never.

        Returns:
            Every model output by name, each float32 of shape [N, classes].

        Raises:
            RequestError: DEADLINE_EXCEEDED when the deadline passed before compute.
        """
        if deadline is not None and time.monotonic() >= deadline:
            raise RequestError(Status.DEADLINE_EXCEEDED, "deadline exceeded before compute")
        compute_start = time.perf_counter()
        self._metrics.decode.observe(compute_start - started)
        outputs = self.model.run(batch)
        self._metrics.compute.observe(time.perf_counter() - compute_start)
        self._metrics.count_predictions(outputs[LOGITS].argmax(axis=1))
        if self._shift is not None:
            self._shift.observe(batch)
        return outputs
