"""The lab's input shift score: foldserve 0.1's per-unit statistic on the model input.

For each pixel whose training variance is not tiny, `|m − mean| / std + ½ · |log(v / var)|`, with
`m` and `v` an exponentially weighted mean and variance of the traffic (half-life 100 examples,
each example winsorized at 5 reference stds, a live variance floored at 1% of the reference's),
averaged over the pixels: about 0 for traffic like the training data, 1 for a shift of one
standard deviation in every pixel. The server's monitor now runs sequential tests instead
(docs: "How the shift monitor decides"); the lab keeps this score as a per-slice measure of how
far a slice's inputs sit from the input BN's statistics.
"""

from __future__ import annotations

import numpy as np

from foldserve.contract import BNStats

HALF_LIFE = 100.0
CLIP = 5.0  # reference stds
VAR_FLOOR = 0.01  # of the reference variance
MIN_VAR_FRACTION = 0.01  # of the median variance: a pixel below it is left out
TINY_VAR_EPS_FACTOR = 100.0


def input_shift_score(stats: BNStats, traffic: np.ndarray) -> float:
    """The score after the examples of `traffic` (`[N, features]`, in order)."""
    mean, var = np.asarray(stats.mean, np.float64), np.asarray(stats.var, np.float64)
    tiny = max(TINY_VAR_EPS_FACTOR * stats.eps, MIN_VAR_FRACTION * float(np.median(var)))
    keep = ~((var < tiny) | (var <= 0))
    spread = np.sqrt(var)
    spread[~keep] = np.sqrt(np.maximum(var[~keep], tiny))
    low, high = mean - CLIP * spread, mean + CLIP * spread
    decay = 0.5 ** (1.0 / HALF_LIFE)
    m, q = mean.copy(), var + mean**2
    square_high = (np.abs(mean) + CLIP * spread) ** 2
    for row in np.asarray(traffic, np.float64):
        m = decay * m + (1 - decay) * np.minimum(np.maximum(row, low), high)
        q = decay * q + (1 - decay) * np.minimum(row * row, square_high)
    m, q, mean, var = m[keep], q[keep], mean[keep], var[keep]
    v = np.maximum(q - m * m, VAR_FLOOR * var)
    return float(np.mean(np.abs(m - mean) / np.sqrt(var) + 0.5 * np.abs(np.log(v / var))))
