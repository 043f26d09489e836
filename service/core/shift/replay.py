"""Replaying clean examples through a reference's tests: how often they alarm.

The tests of the server (`summaries`, `bank`, `cusum.walk`), vectorized over long streams: a
bootstrap stream of `examples` draws from the given rows, in blocks; at every alarm every
statistic restarts from 0 (a new monitor) and the replay goes on, so `examples / alarms` is a
measured ARL to set beside the stated one. Export and `foldserve calibrate` check a reference
with it; the shift evaluation measures false-alarm rates with it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from foldserve.contract import SOURCES, ShiftReference
from foldserve.core.shift.bank import TestBank
from foldserve.core.shift.cusum import walk
from foldserve.core.shift.summaries import Summaries

BLOCK = 2048


@dataclass
class ReplayResult:
    """What a clean replay did: examples, alarms, the highest statistic/threshold reached, and
    the first few alarms (example, tests above)."""

    examples: int
    alarms: int
    peak: float
    first: list[tuple[int, tuple[str, ...]]] = field(default_factory=list)

    @property
    def arl(self) -> float:
        """Examples per alarm (infinite when none)."""
        return self.examples / self.alarms if self.alarms else float("inf")


def rows_of(reference: ShiftReference, sources: Mapping[str, np.ndarray]) -> tuple:
    """The rows a reference reads (its sources end to end, in `SOURCES` order), their offsets
    and width."""
    used = [s for s in SOURCES if any(g.source == s for g in reference.groups)]
    offsets, at = {}, 0
    for source in used:
        offsets[source], at = at, at + sources[source].shape[1]
    rows = np.concatenate([np.asarray(sources[s], np.float64) for s in used], axis=1)
    return rows, offsets, at


def replay(
    reference: ShiftReference,
    sources: Mapping[str, np.ndarray],
    labels: np.ndarray,
    class_labels: Sequence[str],
    examples: int,
    seed: int = 0,
    arl: float | None = None,
) -> ReplayResult:
    """Replay `examples` bootstrap draws of clean rows through the reference's tests.

    Args:
        sources: each row source's values for the clean examples (`[N, width]`).
        labels: their predicted classes.
        arl: the stated ARL to test with (None: the reference's).
    """
    rows, offsets, width = rows_of(reference, sources)
    summaries = Summaries(reference, offsets, width)
    bank = TestBank(reference, summaries.names, class_labels, arl)
    rng = np.random.default_rng(seed)
    result = ReplayResult(examples, 0, 0.0)
    state = np.zeros(len(bank.names))
    done = 0
    while done < examples:
        picks = rng.integers(0, len(rows), min(BLOCK, examples - done))
        increments = bank.increments(summaries(rows[picks]), labels[picks])
        state = _run(state, increments, bank, done, result)
        done += len(picks)
    return result


def _run(
    state: np.ndarray, increments: np.ndarray, bank: TestBank, done: int, result: ReplayResult
) -> np.ndarray:
    """Walk a block (`[T, B]`), restarting at every alarm; the statistics after it."""
    at = 0
    while at < increments.shape[1]:
        values = walk(state, increments[:, at:], bank.caps)
        ratios = values / bank.thresholds[:, None]
        above = (ratios > 1.0).any(axis=0)
        if not above.any():
            result.peak = max(result.peak, float(ratios.max()))
            return values[:, -1]
        column = int(np.flatnonzero(above)[0])
        result.peak = max(result.peak, float(ratios[:, : column + 1].max()))
        result.alarms += 1
        if len(result.first) < 10:
            hits = ratios[:, column]
            fired = tuple(n for n, r in zip(bank.names, hits, strict=True) if r > 1.0)
            result.first.append((done + at + column + 1, fired))
        state = np.zeros_like(state)
        at += column + 1
    return state
