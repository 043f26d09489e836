"""Normal scores: any summary made N(0, 1) on reference traffic, so one CUSUM formula fits all.

A summary (a whitened component, a layer's level, a residual energy) has whatever distribution
the data gives it. Its *normal score* is `Φ⁻¹(F(s))`, F the summary's distribution on the
reference sample: exactly N(0, 1) for traffic drawn like the reference, whatever F is. F is kept
as knots: the reference quantiles at the normal scores of an even grid (`z_grid`); between knots
the score is linear in s, beyond the last knot it goes on with the slope of the outermost unit of
the grid (a Gaussian tail), and it is clipped at ±`cap`, so that one odd example moves a
CUSUM by at most `cap − k`.

The *spread* of a score is `Φ⁻¹(P(|Z| ≤ |z|))`: N(0, 1) as well while |z| is distributed like
|N(0, 1)|, larger when the summary spreads out, smaller when it narrows (`spread`, a table).
"""

from __future__ import annotations

import math

import numpy as np

# Acklam's rational approximation of the normal quantile (relative error below 1.2e-9).
_A = (-39.69683028665376, 220.9460984245205, -275.9285104469687, 138.3577518672690,
      -30.66479806614716, 2.506628277459239)  # fmt: skip
_B = (-54.47609879822406, 161.5858368580409, -155.6989798598866, 66.80131188771972,
      -13.28068155288572)  # fmt: skip
_C = (-0.007784894002430293, -0.3223964580411365, -2.400758277161838, -2.549732539343734,
      4.374664141464968, 2.938163982698783)  # fmt: skip
_D = (0.007784695709041462, 0.3224671290700398, 2.445134137142996, 3.754408661907416)
_SPREAD_STEP = 1e-3


def normal_cdf(x: np.ndarray | float) -> np.ndarray:
    """Φ, elementwise."""
    erf = np.vectorize(math.erf, otypes=[np.float64])
    return 0.5 * (1.0 + erf(np.asarray(x, np.float64) / math.sqrt(2.0)))


def normal_quantile(p: np.ndarray | float) -> np.ndarray:
    """Φ⁻¹, elementwise, for p in (0, 1)."""
    p = np.asarray(p, np.float64)
    out = np.empty_like(p)
    low, high = p < 0.02425, p > 1 - 0.02425
    mid = ~(low | high)
    q = p[mid] - 0.5
    r = q * q
    num = ((((_A[0] * r + _A[1]) * r + _A[2]) * r + _A[3]) * r + _A[4]) * r + _A[5]
    den = ((((_B[0] * r + _B[1]) * r + _B[2]) * r + _B[3]) * r + _B[4]) * r + 1.0
    out[mid] = q * num / den
    for mask, sign in ((low, 1.0), (high, -1.0)):
        t = np.sqrt(-2.0 * np.log(np.where(sign > 0, p[mask], 1.0 - p[mask])))
        num = ((((_C[0] * t + _C[1]) * t + _C[2]) * t + _C[3]) * t + _C[4]) * t + _C[5]
        den = (((_D[0] * t + _D[1]) * t + _D[2]) * t + _D[3]) * t + 1.0
        out[mask] = sign * num / den
    return out


def z_grid(examples: int, widest: float, count: int) -> np.ndarray:
    """The knots' normal scores for a reference of `examples`: an even grid out to where at
    least 5 reference values lie beyond the outermost knot, and never past `widest`."""
    reach = float(normal_quantile(1.0 - 5.0 / max(examples, 11)))
    reach = min(widest, max(reach, 0.5))
    return np.linspace(-reach, reach, count)


def fit_knots(values: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Knots of each column of `values` ([N, S]) at the normal scores `grid`: [S, len(grid)],
    strictly increasing (ties spread by a hair, so that the score is a function)."""
    probabilities = normal_cdf(grid)
    knots = np.quantile(values, probabilities, axis=0).T
    spread = np.maximum(knots[:, -1] - knots[:, 0], 1e-12)
    step = 1e-9 * spread[:, None]
    bumped = knots + step * np.arange(knots.shape[1])
    return np.maximum.accumulate(bumped, axis=1)


class NormalScores:
    """The normal scores of S summaries at once, from their knots ([S, J]) on a shared grid."""

    def __init__(self, knots: np.ndarray, grid: np.ndarray, cap: float) -> None:
        knots = np.asarray(knots, np.float64)
        self.cap = cap
        count, size = knots.shape
        self._low, self._high = knots[:, 0].copy(), knots[:, -1].copy()
        width = self._high - self._low
        self._width = np.where(width > 0, width, 1.0)
        # Every summary's knots mapped into its own unit interval [2s, 2s + 1]: one np.interp
        # call scores every summary of a batch.
        self._keys = ((knots - self._low[:, None]) / self._width[:, None]).clip(0.0, 1.0)
        self._keys = (self._keys + 2.0 * np.arange(count)[:, None]).ravel()
        self._values = np.tile(grid, count)
        self._offsets = 2.0 * np.arange(count)
        unit = max(1, round((size - 1) / (grid[-1] - grid[0])))  # knots per unit of z
        inner = min(unit, size - 1)
        self._slope_low = (grid[inner] - grid[0]) / np.maximum(knots[:, inner] - knots[:, 0], 1e-12)
        self._slope_high = (grid[-1] - grid[-1 - inner]) / np.maximum(
            knots[:, -1] - knots[:, -1 - inner], 1e-12
        )
        self._z_low, self._z_high = grid[0], grid[-1]

    def __call__(self, values: np.ndarray) -> np.ndarray:
        """Normal scores of a batch of summaries ([B, S] → [B, S]), clipped at ±cap."""
        t = (values - self._low) / self._width
        np.clip(t, 0.0, 1.0, out=t)
        t += self._offsets
        scores = np.interp(t.ravel(), self._keys, self._values).reshape(values.shape)
        above, below = values > self._high, values < self._low
        if above.any():
            tail = self._z_high + (values - self._high) * self._slope_high
            scores = np.where(above, tail, scores)
        if below.any():
            tail = self._z_low + (values - self._low) * self._slope_low
            scores = np.where(below, tail, scores)
        return np.clip(scores, -self.cap, self.cap, out=scores)


def spread_table(cap: float) -> tuple[np.ndarray, np.ndarray]:
    """(|z|, spread score) on a fine grid from 0 to `cap`, for np.interp."""
    magnitude = np.arange(0.0, cap + _SPREAD_STEP, _SPREAD_STEP)
    inside = np.clip(2.0 * normal_cdf(magnitude) - 1.0, 1e-300, 1.0 - 1e-16)
    return magnitude, np.clip(normal_quantile(inside), -cap, cap)


class Spread:
    """The spread score of normal scores (elementwise): linear between the points of a table at
    even steps of |z|, found by index rather than by search (what np.interp gives, faster)."""

    def __init__(self, cap: float) -> None:
        _, table = spread_table(cap)
        self._table = np.append(table, table[-1])  # |z| at the cap: its last step is flat
        self._last = len(table) - 1

    def __call__(self, scores: np.ndarray) -> np.ndarray:
        where = np.abs(scores)
        where *= 1.0 / _SPREAD_STEP
        np.minimum(where, self._last, out=where)
        index = where.astype(np.intp)
        where -= index  # the fraction of the step
        low = self._table[index]
        high = self._table[index + 1]
        high -= low
        high *= where
        high += low
        return high
