"""Adaptive micro-batching: model runs of concurrent calls share one onnxruntime run.

No window and no batching thread. A call that finds no run in progress runs at once (alone, or
with whatever queued meanwhile); a call that arrives while a run is in progress queues, and the
calls that queued while the model ran go into the next run, led by the oldest of them. So a lone
call never waits, and under load each run takes everything that is waiting (up to `max_batch`
examples). A folded network answers an example the same whatever shares its batch, so this
changes what a call costs, never what it gets back. Everything else of a call (its checks, its
deadline, its metrics, the shift monitor's update) stays its own: only the run is shared. It
knows no gRPC.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import numpy as np

Outputs = dict[str, np.ndarray]


class _Waiting:
    """One call's examples in the queue, and its answer once a run has made it."""

    __slots__ = ("batch", "error", "outputs", "ready")

    def __init__(self, batch: np.ndarray) -> None:
        self.batch = batch
        self.outputs: Outputs | None = None
        self.error: BaseException | None = None
        # Held until the call is answered or asked to lead the next run (the cheapest wake-up).
        self.ready = threading.Lock()
        self.ready.acquire()


class Batcher:
    """Runs `run` on the examples of concurrent callers together.

    Args:
        run: the model run, `[N, ...]` float32 batch -> every output by name (`[N, ...]`).
        max_batch: at most this many examples per run (a larger single call runs alone).
    """

    def __init__(self, run: Callable[[np.ndarray], Outputs], max_batch: int) -> None:
        self._run = run
        self._max = max(1, max_batch)
        self._lock = threading.Lock()
        self._queue: list[_Waiting] = []
        self._running = False
        self.runs = 0  # model runs made (read by tests and benchmarks)

    def run(self, batch: np.ndarray) -> Outputs:
        """This call's outputs, from a run that may hold other calls' examples too.

        Raises:
            Whatever the model run raised, in every call of that run.
        """
        waiting = _Waiting(batch)
        with self._lock:
            self._queue.append(waiting)
            lead = not self._running
            self._running = True
        if not lead:
            waiting.ready.acquire()  # answered, or asked to lead (still queued, then)
        if waiting.outputs is None and waiting.error is None:
            self._lead()
        if waiting.error is not None:
            raise waiting.error
        return waiting.outputs  # type: ignore[return-value]

    def _take(self) -> list[_Waiting]:
        with self._lock:
            queue, count, total = self._queue, 0, 0
            while count < len(queue) and (
                not count or total + len(queue[count].batch) <= self._max
            ):
                total += len(queue[count].batch)
                count += 1
            taken, self._queue = queue[:count], queue[count:]
        return taken

    def _lead(self) -> None:
        """Run what is queued (this call's examples first), answer it, hand the lead on."""
        taken = self._take()
        try:
            if len(taken) == 1:
                taken[0].outputs = self._run(taken[0].batch)
            else:
                self._answer(taken, self._run(np.concatenate([w.batch for w in taken])))
            self.runs += 1
        except BaseException as exc:  # every call of the run gets the run's failure
            for waiting in taken:
                waiting.error = exc
        with self._lock:
            following = self._queue[0] if self._queue else None
            self._running = following is not None
        for waiting in taken[1:]:
            waiting.ready.release()
        if following is not None:
            following.ready.release()  # the oldest waiting call leads the next run

    @staticmethod
    def _answer(taken: list[_Waiting], outputs: Outputs) -> None:
        start = 0
        for waiting in taken:
            end = start + len(waiting.batch)
            waiting.outputs = {name: value[start:end] for name, value in outputs.items()}
            start = end
