"""Running one loaded model version for a request, the same way whichever protocol asked: the
deadline check, compute timing, predicted-class counts and the covariate shift monitor.

A run fetches what the caller asked for, plus what the server itself reads: a classifier's logits
(the predicted classes it counts) and, when the monitor watches the graph's taps, the `taps`
output. One example of a single-input float32 model runs through the thread's IO binding
(`core.binding`). It knows no protocol: times are numbers and failures are `RequestError`s.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np

from foldserve.contract import SOURCE_PROBABILITIES
from foldserve.core.adapt.reservoir import Reservoir
from foldserve.core.binding import BoundRuns
from foldserve.core.errors import RequestError, Status, invalid
from foldserve.core.metrics import VersionMetrics
from foldserve.core.model import Model
from foldserve.core.shift.monitor import ShiftMonitor
from foldserve.core.shift.settings import ShiftSettings
from foldserve.core.shift.summaries import Summaries
from foldserve.core.strings import from_onnx, is_strings

Outputs = dict[str, np.ndarray]


class ModelRunner:
    """Runs one loaded model version.

    Args:
        model: the loaded, checked model.
        metrics: the series of this version.
        shift: the shift monitor's settings; it runs when on and the model has a `shift` source.
        reservoir: where the model's recent inputs are kept for adaptation (None: nowhere).
    """

    def __init__(
        self,
        model: Model,
        metrics: VersionMetrics,
        shift: ShiftSettings | None = None,
        reservoir: Reservoir | None = None,
    ) -> None:
        self.model = model
        self.reservoir = reservoir
        self.metrics = metrics
        self.monitor = monitor_for(model, shift or ShiftSettings())
        if self.monitor is not None:
            metrics.watch_shift(self.monitor)
        self._tapped = self.monitor is not None and model.shift.tapped_session is not None  # type: ignore[union-attr]
        extra = model.shift.extra_outputs if self.monitor is not None else ()  # type: ignore[union-attr]
        self._all = (*model.output_names, *extra)
        # What the monitor reads besides the taps: the outputs its rows take (probabilities).
        self._watched = _watched_outputs(model) if self.monitor is not None else ()
        classifier = model.classifier
        self._logits = classifier.logits if classifier is not None else None
        self._single = classifier if len(model.inputs) == 1 else None
        self._bound = _bound_runs(model, self._all, self._tapped)
        self._strings = frozenset(o.name for o in model.outputs if is_strings(o.dtype))

    def run(
        self, feeds: dict[str, np.ndarray], names: Sequence[str], deadline: float | None
    ) -> Outputs:
        """Run a validated request.

        Args:
            feeds: every input by name, checked against the model.
            names: the outputs to return.
            deadline: when the caller stops waiting (`time.monotonic`), None for never.

        Returns:
            The named outputs, by name.

        Raises:
            RequestError: DEADLINE_EXCEEDED when the deadline passed before compute (checked per
                call, before it joins a shared run); INVALID_ARGUMENT when onnxruntime refuses
                the inputs (a dynamic size the graph cannot take).
        """
        if deadline is not None and time.monotonic() >= deadline:
            raise RequestError(Status.DEADLINE_EXCEEDED, "deadline exceeded before compute")
        compute_start = time.perf_counter()
        outputs = self._compute(feeds, names)
        metrics = self.metrics
        metrics.compute.observe(time.perf_counter() - compute_start)
        if self._logits is not None and self._logits in outputs:
            labels = outputs[self._logits].argmax(axis=1)
            metrics.count_predictions(labels)
            monitor = self.monitor
            if monitor is not None:
                model_input = feeds[self._single.input.name] if self._single else None
                monitor.observe(self.model.shift.parts(model_input, outputs), labels)  # type: ignore[union-attr,arg-type]
        if self.reservoir is not None:
            self.reservoir.add(feeds[self._single.input.name])  # type: ignore[union-attr]
        result = {name: outputs[name] for name in names}
        for name in self._strings.intersection(result):  # `str` elements -> UTF-8 bytes
            result[name] = from_onnx(result[name])
        return result

    def _compute(self, feeds: dict[str, np.ndarray], names: Sequence[str]) -> Outputs:
        single = self._single
        if self._bound is not None:
            batch = feeds[single.input.name]  # type: ignore[union-attr]
            if batch.shape[0] == 1 and batch.dtype == np.float32:
                return self._bound.run(batch)  # one example: through this thread's binding
        wanted = self._fetched(names)
        try:
            return self.model.run(feeds, wanted, self._tapped)
        except Exception as exc:  # onnxruntime's errors for shapes the graph cannot take
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise invalid(f"inputs: the model cannot run on these inputs: {message}") from None

    def _fetched(self, names: Sequence[str]) -> tuple[str, ...]:
        """What a plain run fetches: the names asked for, the logits and what the monitor reads
        (its taps, the probabilities)."""
        if self.monitor is None and (self._logits is None or self._logits in names):
            return tuple(names)
        monitor = (*self._all[len(self.model.outputs) :], *self._watched)
        extra = [n for n in (self._logits, *monitor) if n]
        return tuple(dict.fromkeys((*names, *extra)))


def _watched_outputs(model: Model) -> tuple[str, ...]:
    """The model outputs a monitored run must fetch for the monitor's rows."""
    source, classifier = model.shift, model.classifier
    if source is None or classifier is None or SOURCE_PROBABILITIES not in source.widths:
        return ()
    return (classifier.probabilities or classifier.logits,)


def monitor_for(model: Model, settings: ShiftSettings) -> ShiftMonitor | None:
    """The shift monitor of a model, None when it has none or the settings turn it off. With
    `settings.state_dir` its state is shared by every process of the server that loads the same
    version (`core.shift.shared`)."""
    source = model.shift
    if source is None or not settings.enabled:
        return None
    summaries = Summaries(source.reference, source.offsets, source.width)
    identity = f"{model.name}\0{model.version}\0{model.sha256}"
    sides = {tap.layer: tap.side for tap in source.taps}
    return ShiftMonitor(source.reference, summaries, model.class_labels, settings, identity, sides)


def _bound_runs(model: Model, names: tuple[str, ...], tapped: bool) -> BoundRuns | None:
    """One-example runs through IO bindings, for a single float32 input and float32 outputs
    whose shape past the batch axis is fixed (a binding's buffers are allocated once)."""
    classifier = model.classifier
    if classifier is None or len(model.inputs) != 1 or classifier.input.dtype != np.float32:
        return None
    if any(None in o.shape[1:] or o.dtype != np.float32 for o in model.outputs):
        return None
    session = model.shift.tapped_session if tapped else model.session  # type: ignore[union-attr]
    return BoundRuns(session, classifier.input.name, classifier.example_shape, names)
