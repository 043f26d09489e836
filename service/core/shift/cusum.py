"""Page's CUSUM: thresholds from a stated average run length (ARL), and the batched update.

Two kinds of one-sided CUSUM run in the monitor:

- **Gaussian**, on a score that is N(0, 1) while traffic is like the reference (the normal scores
  of `normal_scores`): `S ← max(0, S + x − k)`, alarm when `S > h`. Siegmund's approximation
  gives its ARL for x ~ N(μ, 1) (Siegmund 1985, *Sequential Analysis*, eq. 2.57):

      ARL(μ) ≈ (exp(−2Δb) + 2Δb − 1) / (2Δ²),   Δ = μ − k,  b = h + 1.166

  (b² when Δ = 0), so a stated ARL between false alarms (μ = 0) fixes h.
- **Bernoulli on a lattice**, on whether each example's predicted class is c (prior p):
  `S ← max(0, S + up)` when it is, `S ← max(0, S − down)` when it is not, integer steps,
  alarm when `S ≥ H`. On a lattice the run length is a Markov chain on 0..H−1, so its ARL is
  exact: `(I − P) L = 1` (Brook and Evans 1972).

`walk` runs either kind over a batch of increments at once (cumulative sums: the same values as
one update per example).
"""

from __future__ import annotations

import json
import math

import numpy as np

SIEGMUND_CORRECTION = 1.166  # 2 × 0.583: the overshoot of a Gaussian random walk over h
LATTICE_STATES = 2048  # the most states a class test's chain may have (a dense solve)


def siegmund_arl(k: float, h: float, mu: float = 0.0) -> float:
    """Average run length of a one-sided Gaussian CUSUM (reference k, threshold h) on N(mu, 1)."""
    delta, b = mu - k, h + SIEGMUND_CORRECTION
    if abs(delta) < 1e-9:
        return b * b
    x = 2.0 * delta * b
    if -x > 700:  # exp overflows: the run length is astronomically long anyway
        return math.inf
    return (math.exp(-x) + x - 1.0) / (2.0 * delta * delta)


def gaussian_threshold(k: float, arl: float) -> float:
    """The threshold h at which a Gaussian CUSUM with reference k has `arl` on N(0, 1)."""
    if arl <= 1.0:
        raise ValueError(f"an average run length must be above 1 example, got {arl}")
    low, high = -SIEGMUND_CORRECTION + 1e-9, 1.0
    while siegmund_arl(k, high) < arl:
        high *= 2.0
    for _ in range(200):  # the ARL grows with h: bisect
        mid = 0.5 * (low + high)
        low, high = (mid, high) if siegmund_arl(k, mid) < arl else (low, mid)
    return max(high, 0.0)


def lattice_arl(p: float, up: int, down: int, threshold: int) -> float:
    """Exact ARL of an integer CUSUM that moves +up with probability p, else −down (floored at
    0), alarming at `threshold`; the CUSUM of a class that should appear with probability p.

    `up` / `down` of the class-frequency tests: rarer (a miss counts +1, a hit −down) or more
    frequent (a hit counts +up, a miss −1); either is this chain with its own p.
    """
    n = threshold
    transitions = np.zeros((n, n))
    for state in range(n):
        higher, lower = state + up, max(state - down, 0)
        if higher < n:
            transitions[state, higher] += p
        transitions[state, lower] += 1.0 - p
    lengths = np.linalg.solve(np.eye(n) - transitions, np.ones(n))
    return float(lengths[0])


LatticeKey = tuple[float, int, int, float]
_LATTICE: dict[LatticeKey, int] = {}  # lattice_threshold's answers
LATTICE_KEPT = 4096


def lattice_threshold(p: float, up: int, down: int, arl: float) -> int:
    """The least integer threshold whose exact ARL is at least `arl`.

    Cached: a model's versions and reloads ask for the same thresholds (each takes a few
    dense solves); `known_lattice_thresholds` and `remember_lattice_thresholds` carry them from
    a process that worked them out to one that needs them.
    """
    key = (p, up, down, arl)
    found = _LATTICE.get(key)
    if found is None:
        if len(_LATTICE) >= LATTICE_KEPT:
            _LATTICE.clear()
        found = _LATTICE[key] = _lattice_threshold(*key)
    return found


def known_lattice_thresholds() -> dict[LatticeKey, int]:
    """Every lattice threshold this process has worked out."""
    return dict(_LATTICE)


def remember_lattice_thresholds(known: dict[LatticeKey, int]) -> None:
    """Take thresholds worked out elsewhere (`known_lattice_thresholds`)."""
    if len(_LATTICE) + len(known) >= LATTICE_KEPT:
        _LATTICE.clear()
    _LATTICE.update(known)


def lattice_thresholds_json(known: dict[LatticeKey, int]) -> str:
    """`known` as JSON (a list of [p, up, down, arl, threshold]; floats round-trip exactly)."""
    return json.dumps([[*key, threshold] for key, threshold in known.items()])


def lattice_thresholds_from_json(text: str) -> dict[LatticeKey, int]:
    """What `lattice_thresholds_json` wrote."""
    return {
        (float(p), int(up), int(down), float(arl)): int(h)
        for p, up, down, arl, h in json.loads(text)
    }


def _lattice_threshold(p: float, up: int, down: int, arl: float) -> int:
    """`lattice_threshold`, uncached.

    Raises:
        ValueError: the walk does not drift down (no threshold holds), or the threshold would
            need more than `LATTICE_STATES` states.
    """
    if p * up - (1.0 - p) * down >= 0:
        raise ValueError(f"a CUSUM moving +{up} w.p. {p:.3g} else -{down} does not drift down")
    low, high = 1, 2
    while lattice_arl(p, up, down, high) < arl:
        low, high = high, 2 * high
        if high > LATTICE_STATES:
            raise ValueError(f"ARL {arl:g} needs over {LATTICE_STATES} states (p {p:.3g})")
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (mid, high) if lattice_arl(p, up, down, mid) < arl else (low, mid)
    return high


def walk(start: np.ndarray, increments: np.ndarray, cap: np.ndarray) -> np.ndarray:
    """Run one-sided CUSUMs over a batch: `S_t = min(max(0, S_{t-1} + x_t), cap)`.

    Args:
        start: each test's statistic before the batch, `[T]`.
        increments: `[T, B]`, each test's increments for the batch's examples in order (the
            reference value already taken off).
        cap: `[T]`, where each statistic saturates (at or above its threshold), so that an alarm
            clears soon after the traffic does.

    Returns:
        Every test's statistic after each example, `[T, B]`: the same values as one update per
        example.
    """
    # Lindley's recursion in closed form: with P_t the sum of the first t increments,
    # S_t = P_t − min(−S_0, min_{s≤t} P_s). The cap restarts the walk from it, so a batch in
    # which some test reaches its cap (only under a gross shift) runs one example at a time.
    sums = np.cumsum(increments, axis=1)
    lows = np.minimum.accumulate(sums, axis=1)
    np.minimum(lows, -start[:, None], out=lows)  # −S_0 ≤ 0 = P_0: the empty sum is covered
    sums -= lows
    if (sums > cap[:, None]).any():
        return _capped(start, increments, cap)
    return sums


def _capped(start: np.ndarray, increments: np.ndarray, cap: np.ndarray) -> np.ndarray:
    """The capped recursion, one example at a time (a vector step over the tests)."""
    values = np.empty_like(increments)
    state = start.astype(np.float64)
    for index in range(increments.shape[1]):
        state = np.minimum(np.maximum(state + increments[:, index], 0.0), cap)
        values[:, index] = state
    return values
