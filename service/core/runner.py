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
from service.core.errors import RequestError, Status, invalid
from service.core.foreign_shift import input_monitor, input_taps
from service.core.model import Model
from service.core.monitor import ShiftMonitor, ShiftSettings
from service.metrics import VersionMetrics


class ModelRunner:
    """Runs one loaded model version.

    Args:
        model: the loaded, checked model.
        metrics: the series of this version.
        shift: the shift monitor's settings; it runs when on and the model was loaded with its
            taps (`Model.tapped_session`), or (a model foldserve did not train) with the input
            BN's null calibration (`Model.foreign.shift`).
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
        settings = shift or ShiftSettings()
        if model.tapped_session is not None:
            self.monitor = ShiftMonitor.of(model.metadata, settings)
        elif model.foreign is not None and model.foreign.shift is not None:
            self.monitor = input_monitor(model.foreign.bn_stats, model.foreign.shift, settings)
        if self.monitor is not None:
            metrics.watch_shift(self.monitor)
        tapped = self.monitor is not None
        # A model foldserve did not train maps its outputs (and computes its taps) in `run`.
        self._bound: BoundRuns | None = None
        if model.foreign is None:
            names = (*model.output_names, TAPS) if tapped else model.output_names
            session = model.tapped_session if tapped else model.session
            self._bound = BoundRuns(session, model.input.name, model.input.shape, names)
        self.batcher: Batcher | None = None
        if batching is not None and batching.enabled and in_flight is not None:
            self.batcher = Batcher(lambda batch: model.run(batch, taps=tapped), batching.max_batch)
            self._batching_above = batching.min_in_flight
            self._in_flight = in_flight

    def _start(self, call: Call) -> float:
        """Check the deadline and record the decode time; returns the compute start."""
        deadline = call.deadline
        if deadline is not None and time.monotonic() >= deadline:
            raise RequestError(Status.DEADLINE_EXCEEDED, "deadline exceeded before compute")
        compute_start = time.perf_counter()
        self.metrics.decode.observe(compute_start - call.started)
        return compute_start

    def run_graph(
        self, feeds: dict[str, np.ndarray], names: list[str], call: Call
    ) -> dict[str, np.ndarray]:
        """Run a validated request of a model foldserve did not train (`Model.foreign`).

        Args:
            feeds: every graph input by name, checked against the graph.
            names: the outputs to return.
            call: the call, for its start time and deadline.

        Returns:
            The named outputs. A classifier-shaped model's predicted classes are counted when
            its logits are among them.

        Raises:
            RequestError: DEADLINE_EXCEEDED when the deadline passed before compute;
                INVALID_ARGUMENT when onnxruntime refuses the inputs (a dynamic size the graph
                cannot take).
        """
        compute_start = self._start(call)
        try:
            outputs = self.model.run_graph(feeds, names)
        except Exception as exc:  # onnxruntime's errors for shapes the graph cannot take
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise invalid(f"inputs: the model cannot run on these inputs: {message}") from None
        self.metrics.compute.observe(time.perf_counter() - compute_start)
        classifier = self.model.foreign.classifier  # type: ignore[union-attr]
        if classifier is not None and classifier.logits in outputs:
            labels = outputs[classifier.logits].argmax(axis=1)
            self.metrics.count_predictions(labels)
            if self.monitor is not None:
                self.monitor.observe(input_taps(feeds[classifier.input.name]), labels)
        return outputs

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
        compute_start = self._start(call)
        metrics = self.metrics
        monitor, batcher = self.monitor, self.batcher
        if batcher is not None and self._in_flight() >= self._batching_above:
            outputs = batcher.run(batch)  # this call's rows of a run it may share
        elif batch.shape[0] == 1 and self._bound is not None:
            outputs = self._bound.run(batch)  # one example: through this thread's binding
        else:
            outputs = self.model.run(batch, taps=monitor is not None)
        metrics.compute.observe(time.perf_counter() - compute_start)
        labels = outputs[LOGITS].argmax(axis=1)
        metrics.count_predictions(labels)
        if monitor is not None:
            monitor.observe(outputs.pop(TAPS), labels)
        return outputs
