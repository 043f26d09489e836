"""Statistics of the suite: percentiles of one run, medians over rounds with their spread.

Every figure the suite reports is the median over its rounds with the min and max beside it
(`spread`), and every ratio is taken round by round (foldserve's and the echo floor's figures of
the same round) before its median: load from elsewhere on the machine then cancels out of it.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

import numpy as np

PERCENTILES = (50, 90, 99)
CDF_POINTS = 200


def percentiles(latencies_us: np.ndarray) -> dict[str, float]:
    """p50, p90 and p99 of one run's latencies, as {"p50_us": …}."""
    values = np.percentile(latencies_us, PERCENTILES) if len(latencies_us) else [math.nan] * 3
    return {f"p{p}_us": float(v) for p, v in zip(PERCENTILES, values, strict=True)}


def spread(values: Sequence[float | None]) -> dict[str, object] | None:
    """Median, min and max over the rounds that have a value, and those values; None if none
    has (a round whose measurement failed has None)."""
    numbers = [float(v) for v in values if v is not None and math.isfinite(v)]
    if not numbers:
        return None
    return {
        "median": statistics.median(numbers),
        "min": min(numbers),
        "max": max(numbers),
        "rounds": numbers,
    }


def ratio_spread(
    numerators: Sequence[float | None], denominators: Sequence[float | None]
) -> dict[str, object] | None:
    """`spread` of the round-by-round ratios numerator / denominator (rounds paired by index;
    a round missing either side is left out)."""
    ratios = [
        None if top is None or not bottom else top / bottom
        for top, bottom in zip(numerators, denominators, strict=False)
    ]
    return spread(ratios)


def cdf(latencies_us: np.ndarray, points: int = CDF_POINTS) -> dict[str, list[float]]:
    """The latency distribution, compact: `points` quantiles from 0 to 99.9%."""
    quantiles = np.linspace(0.0, 0.999, points)
    values = np.quantile(latencies_us, quantiles) if len(latencies_us) else np.full(points, np.nan)
    return {
        "quantile": [round(float(q), 5) for q in quantiles],
        "latency_us": [round(float(v), 2) for v in values],
    }
