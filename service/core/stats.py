"""Triton's inference statistics of one loaded model version: plain counters under a lock, kept
by the data plane for every inference call (V2 ModelInfer over gRPC and REST, each
ModelStreamInfer message, Predict and each PredictStream message) once it has named the version.

What each duration measures, in foldserve's pipeline (`time.perf_counter`, in nanoseconds):

- `queue`: from when the transport hands the admitted call over (REST: before its body is read)
  until decoding starts (`DataPlane.begin`, after the size check);
- `compute_input`: from there until the inputs are decoded, checked against the model,
  batch-checked and reshaped to the graph's shapes;
- `compute_infer`: the model run (onnxruntime, with the counting of predicted classes and the
  shift monitor's update);
- `compute_output`: from the end of the run until the answer is encoded (classification, outputs
  reshaped, the adapter's encoding);
- `success`: from when the transport hands the call over until its answer is encoded, for calls
  answered OK; `fail`: the same for calls that failed after naming the version.

foldserve has no scheduler queue (a call runs as it arrives), so `queue` is the wait for the
request's bytes. The four phases are counted for successful calls only (as Triton does), so
each of their counts is the `success` count. A call that fails before it names a version (bytes
that do not decode, an unknown model) is counted against no model. `inference_count` adds each
successful request's examples (its batch: the first dimension of its first input when the model
has a batch dimension, else 1); `execution_count` adds one per model run (one per request: no
request is batched with another); `last_inference` is when the last call ended, in
milliseconds since the epoch. Each server process counts the calls it answers.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from foldserve.core.call import Call

PHASES = ("queue", "compute_input", "compute_infer", "compute_output")
DURATIONS = ("success", "fail", *PHASES)


def _ns(seconds: float) -> int:
    return max(0, round(seconds * 1e9))


@dataclass(frozen=True)
class VersionStats:
    """The statistics of one model version, as Triton reports them.

    Attributes:
        durations: name (`DURATIONS`) -> (count, total nanoseconds).
    """

    name: str
    version: str
    last_inference: int
    inference_count: int
    execution_count: int
    durations: dict[str, tuple[int, int]]


class InferTiming:
    """The marks of one inference call, kept on its `Call` until the data plane finishes it."""

    __slots__ = ("checked", "decoded", "examples", "ran", "started", "stats")

    def __init__(self, stats: InferStats, started: float, decoded: float) -> None:
        self.stats = stats
        self.started = started
        self.decoded = decoded
        self.checked: float | None = None
        self.ran: float | None = None
        self.examples = 0

    def mark_checked(self, examples: int) -> None:
        """The inputs are ready to run; the request holds `examples` examples."""
        self.checked = time.perf_counter()
        self.examples = examples

    def mark_ran(self) -> None:
        """The model run ended."""
        self.ran = time.perf_counter()

    def end(self, ok: bool) -> None:
        """The call was answered: OK or not."""
        self.stats.record(self, ok, time.perf_counter())


class InferStats:
    """The counters of one loaded version (reset when the version loads again). Times add up
    in seconds (`time.perf_counter`'s floats: a call costs a few additions, and the sums stay
    exact to well under a nanosecond) and are reported in nanoseconds."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._answered = self._failed = self._inferences = self._executions = self._last = 0
        # Seconds: success, fail, queue, compute_input, compute_infer, compute_output.
        self._success = self._fail = self._queue = self._input = self._infer = self._output = 0.0

    def start(self, call: Call) -> InferTiming:
        """The timing of a call that named this version."""
        return InferTiming(self, call.started, call.decode_started)

    def record(self, timing: InferTiming, ok: bool, ended: float) -> None:
        """Count one call that ended at `ended` (`time.perf_counter`)."""
        started, decoded, checked, ran = timing.started, timing.decoded, timing.checked, timing.ran
        last = time.time_ns() // 1_000_000
        with self._lock:
            if ok and checked is not None and ran is not None:
                self._answered += 1
                self._success += ended - started
                self._queue += decoded - started
                self._input += checked - decoded
                self._infer += ran - checked
                self._output += ended - ran
                self._inferences += timing.examples
            else:
                self._failed += 1
                self._fail += ended - started
            if ran is not None:
                self._executions += 1
            self._last = last

    def snapshot(self, name: str, version: str) -> VersionStats:
        """The counters now."""
        with self._lock:
            answered = self._answered
            times = (self._success, self._fail, self._queue, self._input, self._infer, self._output)
            counts = (answered, self._failed, answered, answered, answered, answered)
            durations = {
                key: (count, _ns(seconds))
                for key, count, seconds in zip(DURATIONS, counts, times, strict=True)
            }
            return VersionStats(
                name, version, self._last, self._inferences, self._executions, durations
            )
