"""The shift statistic: live pre-activations of every tapped BN layer against the BN's reference.

On training data a folded BN's units are distributed as the BN's statistics say: the reference
of a unit is N(center, var) (`foldserve.contract.shift` has which, per tap side). Live traffic is
summarised per unit by an exponentially weighted mean `m` and second moment `q` (variance
`v = q - m²`), which one vector `state` holds for every unit of every layer. Each layer scores

    mean over its units of  |m - center| / sqrt(var)  +  ½ · |log(v / var)|

(a standardised mean shift plus the |log| of the std ratio): about 0 for traffic like the
training data, 1 for a shift of one std in every unit. Units whose training variance is too
small to describe a Gaussian (digits' always-blank corner pixels) are left out and watched by a
*sentinel* instead: the largest |m - center| among them, in units of the least std a watched unit
may have. Class mix has its own signal: the Jensen-Shannon divergence (bits) between an
exponentially weighted histogram of predicted classes and the training class priors.

The same code scores the clean replay at export (`training/calibrate.py`) and live traffic in
the server (`foldserve.core.shift.monitor`), so a threshold means the same in both.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from foldserve.contract import BN_OUTPUT, BNStats, Tap

SENTINEL_SUFFIX = "/sentinel"
TINY_VAR_EPS_FACTOR = 100.0  # a training variance under 100·eps is never a Gaussian's
RESCALE_BELOW = 1e-100  # lazy decay: rescale the sums before their weights overflow


@dataclass(frozen=True)
class UnitReference:
    """One tapped layer's reference, per unit (float64 vectors of its channel count)."""

    layer: str
    center: np.ndarray
    var: np.ndarray
    scale: np.ndarray  # what one sentinel step is, in the tap's units
    excluded: np.ndarray  # indices of the units the sentinel watches

    @property
    def units(self) -> int:
        return int(self.center.shape[0])


def unit_reference(
    stats: BNStats, tap: Tap, min_var_fraction: float, excluded: Sequence[int] | None = None
) -> UnitReference:
    """The reference of one tap from its BN's statistics.

    Args:
        stats: the folded BN's statistics.
        tap: the tap showing it.
        min_var_fraction: a unit is excluded when its training variance is under this fraction
            of the layer's median (or under 100·eps).
        excluded: the excluded units as calibrated (None: decide here).
    """
    rv, rm = np.asarray(stats.var, np.float64), np.asarray(stats.mean, np.float64)
    gamma, beta = np.asarray(stats.gamma, np.float64), np.asarray(stats.beta, np.float64)
    if tap.side == BN_OUTPUT:  # y = gamma·(x - mean)/sqrt(var + eps) + beta
        center, var = beta, gamma**2 * rv / (rv + stats.eps)
        unit = np.where(gamma != 0, np.abs(gamma), 1.0) / np.sqrt(rv + stats.eps)
    else:
        center, var, unit = rm, rv, np.ones_like(rv)
    tiny = max(TINY_VAR_EPS_FACTOR * stats.eps, min_var_fraction * float(np.median(rv)))
    if excluded is None:
        excluded = np.flatnonzero((rv < tiny) | (var <= 0))
    scale = unit * np.sqrt(np.maximum(rv, tiny))
    return UnitReference(tap.layer, center, var, scale, np.asarray(excluded, dtype=np.int64))


def references(
    bn_stats: Sequence[BNStats],
    taps: Sequence[Tap],
    min_var_fraction: float,
    excluded: Mapping[str, Sequence[int]] | None = None,
) -> list[UnitReference]:
    """The reference of every tap, in tap order (`excluded`: per layer, as calibrated)."""
    by_layer = {s.layer: s for s in bn_stats}
    return [
        unit_reference(
            by_layer[tap.layer],
            tap,
            min_var_fraction,
            None if excluded is None else excluded.get(tap.layer, ()),
        )
        for tap in taps
    ]


class ShiftStatistic:
    """Scores of a state against references: the per-layer statistic, sentinels, class prior.

    The state (`RunningState`) is one float64 vector holding, layer after layer, each layer's `m`
    then its `q`: the layout of the taps' rows `[value..., square...]` laid end to end, so one
    update is one multiply-add. Score order: `names` (layers, then `<layer>/sentinel`, then the
    prior).
    """

    def __init__(
        self,
        refs: Sequence[UnitReference],
        half_life: float,
        var_floor: float,
        class_priors: Sequence[float],
        clip: float = math.inf,
    ) -> None:
        self.refs = tuple(refs)
        self.clip = clip
        self.decay = 0.5 ** (1.0 / half_life)
        self.layers = tuple(r.layer for r in refs)
        sentinels = [i for i, r in enumerate(refs) if r.excluded.size]
        self.names = (*self.layers, *(refs[i].layer + SENTINEL_SUFFIX for i in sentinels))
        self.priors = np.asarray(class_priors, np.float64)
        offsets = np.cumsum([0, *(2 * r.units for r in refs)])
        self.width = int(offsets[-1])
        self._initial = np.concatenate(
            [np.concatenate([r.center, r.var + r.center**2]) for r in refs]
        )
        keep = [np.setdiff1d(np.arange(r.units), r.excluded) for r in refs]
        self._m = np.concatenate([offsets[i] + k for i, k in enumerate(keep)])
        self._q = np.concatenate(
            [offsets[i] + r.units + k for i, (r, k) in enumerate(zip(refs, keep, strict=True))]
        )
        v0 = np.concatenate([r.var[k] for r, k in zip(refs, keep, strict=True)])
        self._center = np.concatenate([r.center[k] for r, k in zip(refs, keep, strict=True)])
        self._inv_sd, self._log_v0, self._floor = 1.0 / np.sqrt(v0), np.log(v0), var_floor * v0
        sizes = np.array([k.size for k in keep])
        self._segments = None if sizes.all() else np.flatnonzero(sizes)
        self._starts = np.cumsum([0, *sizes])[:-1][sizes > 0]
        self._counts = sizes[sizes > 0].astype(np.float64)
        self._prior_list = self.priors.tolist()
        self._ex_m = np.concatenate(
            [offsets[i] + refs[i].excluded for i in sentinels] or [[]]
        ).astype(np.int64)
        self._ex_center = np.concatenate(
            [refs[i].center[refs[i].excluded] for i in sentinels] or [[]]
        )
        self._ex_inv_scale = 1.0 / np.concatenate(
            [refs[i].scale[refs[i].excluded] for i in sentinels] or [[]]
        )
        self._ex_starts = np.cumsum([0, *(refs[i].excluded.size for i in sentinels)])[:-1]

    def new_state(self) -> RunningState:
        """A fresh running state: every unit at its reference, the histogram at the priors."""
        return RunningState(self._initial, self.priors, self.decay, self._bounds())

    def _bounds(self) -> tuple[np.ndarray, np.ndarray] | None:
        """Where each state entry is winsorized: a value within `clip` stds (a sentinel's
        units: scales) of its reference mean, a square below the square of that bound."""
        if not math.isfinite(self.clip):
            return None
        low, high = [], []
        for ref in self.refs:
            spread = np.sqrt(ref.var)
            spread[ref.excluded] = ref.scale[ref.excluded]
            reach = self.clip * spread
            low += [ref.center - reach, np.zeros(ref.units)]
            high += [ref.center + reach, (np.abs(ref.center) + reach) ** 2]
        return np.concatenate(low), np.concatenate(high)

    def scores(self, running: RunningState) -> np.ndarray:
        """Every score, in `names` order, then the prior score last."""
        state, hist = running.values()
        m, q = state[self._m], state[self._q]
        term = np.abs(m - self._center)
        term *= self._inv_sd
        v = np.maximum(q - m * m, self._floor)
        log_ratio = np.log(v)
        log_ratio -= self._log_v0
        term += 0.5 * np.abs(log_ratio)
        layer_scores = np.add.reduceat(term, self._starts) / self._counts
        if self._segments is not None:  # some layer has every unit excluded
            full = np.zeros(len(self.layers))
            full[self._segments] = layer_scores
            layer_scores = full
        parts = [layer_scores]
        if self._ex_m.size:
            dev = np.abs(state[self._ex_m] - self._ex_center)
            dev *= self._ex_inv_scale
            parts.append(np.maximum.reduceat(dev, self._ex_starts))
        parts.append(np.array([js_bits(hist.tolist(), self._prior_list)]))
        return np.concatenate(parts)


class RunningState:
    """Exponentially weighted means of the tap rows and of the predicted classes (one-hot).

    Decay is lazy: rather than multiplying the whole state by the decay on every example, the
    example is added with a weight that grows as the decay shrinks, and the stored sums are
    rescaled only when read (or when the weight grows large), so an update is one multiply-add.
    Not thread-safe: the monitor holds a lock around it.
    """

    def __init__(
        self,
        initial: np.ndarray,
        priors: np.ndarray,
        decay: float,
        bounds: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> None:
        self._bounds = bounds
        self._sums = initial.astype(np.float64)
        self._hist = priors.astype(np.float64)
        self._decay, self._fresh = decay, 1.0 - decay
        self._scale = 1.0  # the current values are `scale ×` the sums
        self._scratch = np.empty_like(self._sums)

    def add(self, rows: np.ndarray, labels: np.ndarray) -> None:
        """Fold examples in, oldest first. `rows`: `[N, width]` taps; `labels`: `[N]` classes."""
        if rows.shape[0] == 1:  # the common case: one clip and one multiply-add
            self._scale *= self._decay
            gain = self._fresh / self._scale
            row = rows[0]
            if self._bounds is not None:  # minimum then maximum: np.clip costs 4x as much
                row = np.minimum(row, self._bounds[1], out=self._scratch)
                np.maximum(row, self._bounds[0], out=row)
            self._sums += np.multiply(row, gain, out=self._scratch, dtype=np.float64)
            self._hist[labels[0]] += gain
        else:
            steps = self._decay ** np.arange(1, rows.shape[0] + 1, dtype=np.float64)
            gains = self._fresh / (self._scale * steps)
            rows = rows.astype(np.float64)
            if self._bounds is not None:  # in place, as above: np.clip costs several times more
                np.minimum(rows, self._bounds[1], out=rows)
                np.maximum(rows, self._bounds[0], out=rows)
            self._sums += gains @ rows
            self._hist += np.bincount(labels, weights=gains, minlength=self._hist.shape[0])
            self._scale *= steps[-1]
        if self._scale < RESCALE_BELOW:
            self._sums *= self._scale
            self._hist *= self._scale
            self._scale = 1.0

    def values(self) -> tuple[np.ndarray, np.ndarray]:
        """The current state (`[width]`: each layer's means then second moments) and the
        class histogram."""
        return self._sums * self._scale, self._hist * self._scale


def js_bits(p: Sequence[float], q: Sequence[float]) -> float:
    """Jensen-Shannon divergence of two distributions, in bits (0 to 1).

    Plain Python: for a handful of classes it is several times faster than numpy's calls.
    """
    total = 0.0
    for a, b in zip(p, q, strict=True):
        mid = 0.5 * (a + b)
        if a > 0.0:
            total += a * math.log2(a / mid)
        if b > 0.0:
            total += b * math.log2(b / mid)
    return max(0.5 * total, 0.0)
