"""What every RPC shares: the drain gate, status mapping, metrics and logging around a handler."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import grpc
import numpy as np

from service.errors import ServiceError
from service.metrics import Metrics
from service.model import Model
from service.shift import InputShiftMonitor

log = logging.getLogger("foldserve.calls")

Request = TypeVar("Request")
Response = TypeVar("Response")

DRAINING = "server is shutting down (draining); retry on another replica"


class Gate:
    """Admits calls until draining starts, and counts the calls inside for a graceful drain."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._inside = 0
        self.draining = False
        self.last_refused = 0.0

    def enter(self) -> None:
        """Admit one call.

        Raises:
            ServiceError: UNAVAILABLE once draining has started.
        """
        with self._condition:
            if self.draining:
                self.last_refused = time.monotonic()
                raise ServiceError(grpc.StatusCode.UNAVAILABLE, DRAINING)
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


def check_deadline(context: grpc.ServicerContext) -> None:
    """Skip the model run for a call whose deadline has already passed.

    Raises:
        ServiceError: DEADLINE_EXCEEDED.
    """
    if context.time_remaining() <= 0:
        raise ServiceError(grpc.StatusCode.DEADLINE_EXCEEDED, "deadline exceeded before compute")


class ModelRunner:
    """Runs the model for one call, with what every model run shares: the deadline check, queue
    and compute timing, predicted-class counts and the input shift monitor.

    Args:
        model: the loaded model.
        metrics: the server's metrics.
        shift: the input shift monitor, when the model has an input BN to compare against.
    """

    def __init__(
        self, model: Model, metrics: Metrics, shift: InputShiftMonitor | None = None
    ) -> None:
        self.model = model
        self._metrics = metrics
        self._shift = shift

    def run(
        self, batch: np.ndarray, start: float, context: grpc.ServicerContext
    ) -> tuple[np.ndarray, np.ndarray]:
        """Run a validated batch for a call that started at `start` (perf_counter).

        Returns:
            (logits, probabilities), each float32 of shape [N, classes].

        Raises:
            ServiceError: DEADLINE_EXCEEDED when the call's deadline passed before compute.
        """
        check_deadline(context)
        compute_start = time.perf_counter()
        self._metrics.queue.observe(compute_start - start)
        logits, probabilities = self.model.run(batch)
        self._metrics.compute.observe(time.perf_counter() - compute_start)
        self._metrics.count_predictions(logits.argmax(axis=1))
        if self._shift is not None:
            self._shift.observe(batch)
        return logits, probabilities


class Calls:
    """Runs handlers with admission, metrics, status mapping and (debug) logging.

    Args:
        metrics: the server's metrics.
        gate: the drain gate shared by every servicer.
    """

    def __init__(self, metrics: Metrics, gate: Gate) -> None:
        self.metrics = metrics
        self.gate = gate

    def unary(
        self,
        method: str,
        request: Request,
        context: grpc.ServicerContext,
        handler: Callable[[Request, float], Response],
    ) -> Response:
        """Run `handler(request, start_time)` as one call of `method`.

        A ServiceError becomes the call's status; anything else becomes INTERNAL (and is logged).
        """
        start = time.perf_counter()
        metrics = self.metrics.method(method)
        error: ServiceError | None = None
        self.metrics.in_flight.inc()
        try:
            self.gate.enter()
            try:
                return handler(request, start)
            finally:
                self.gate.leave()
        except ServiceError as exc:
            error = exc
        except Exception:
            log.exception("%s failed", method)
            error = ServiceError(grpc.StatusCode.INTERNAL, f"{method}: internal error")
        finally:
            self.metrics.in_flight.dec()
            code = "OK" if error is None else error.code.name
            metrics.record(code, time.perf_counter() - start)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s -> %s: %s", method, error.code.name, error.message)
        context.abort(error.code, error.message)
        raise AssertionError("unreachable: context.abort raises")

    def stream(
        self,
        method: str,
        requests: Iterator[Request],
        context: grpc.ServicerContext,
        handler: Callable[[Request, float], Any],
        on_error: Callable[[Request, ServiceError], Any],
    ) -> Iterator[Any]:
        """Answer each request of a stream with `handler`, or `on_error` when it raises.

        A bad message does not end the stream. Draining refuses a new stream (UNAVAILABLE); one
        already open runs on until the client closes it or the grace period ends.
        """
        metrics = self.metrics.method(method)
        try:
            self.gate.enter()
        except ServiceError as exc:
            metrics.count(exc.code.name)
            context.abort(exc.code, exc.message)
        try:
            for request in requests:
                start = time.perf_counter()
                self.metrics.in_flight.inc()
                code = "OK"
                try:
                    response = handler(request, start)
                except ServiceError as exc:
                    code = exc.code.name
                    response = on_error(request, exc)
                except Exception:
                    log.exception("%s message failed", method)
                    code = "INTERNAL"
                    error = ServiceError(grpc.StatusCode.INTERNAL, f"{method}: internal error")
                    response = on_error(request, error)
                finally:
                    self.metrics.in_flight.dec()
                metrics.record(code, time.perf_counter() - start)
                yield response
        finally:
            self.gate.leave()
