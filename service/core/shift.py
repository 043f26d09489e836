"""Covariate-shift monitor: live inputs compared with the statistics the input BatchNorm learned.

A model trained with an input BN carries, in its BN statistics (`service.contract.BNStats`), the
per-channel mean and variance of the raw features it was trained on (`reads_model_input`). Folding
removed the BN from the graph but not this knowledge: the monitor keeps an exponentially weighted
mean of every live input channel and reports how far it has drifted, in training standard
deviations. Traffic like the training data scores near 0; a sensor that switched units, a
pipeline that stopped scaling its features, or a new population scores well above it.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np

from service.contract import BNStats
from service.defaults import SHIFT_HALF_LIFE

# Examples summed before they are folded into the weighted mean: keeps a call's cost to one
# in-place addition (the serving path is ~40 µs a call; a full update per call cost ~15 µs).
FOLD_EVERY = 32
# A channel whose training variance was ~0 (a digits corner pixel) would otherwise turn any
# change into a huge score; a clipped channel still counts as fully drifted.
MAX_CHANNEL_SHIFT = 10.0


class InputShiftMonitor:
    """Thread-safe running drift score of live inputs against the training statistics."""

    def __init__(
        self,
        mean: Sequence[float],
        var: Sequence[float],
        eps: float,
        example_shape: Sequence[int],
        half_life: int = SHIFT_HALF_LIFE,
    ) -> None:
        """Args:
        mean, var, eps: the input BN's running statistics, one value per channel.
        example_shape: the shape of one example; its first axis holds the channels (features
            for a vector, colour channels for an image).
        half_life: examples after which an observation's weight has halved.
        """
        self._train_mean = np.asarray(mean, dtype=np.float64)
        self._train_std = np.sqrt(np.asarray(var, dtype=np.float64) + eps)
        channels = self._train_mean.shape[0]
        if not example_shape or example_shape[0] != channels:
            raise ValueError(
                f"input BN statistics have {channels} channels, but one example has shape "
                f"{list(example_shape)} (channels first)"
            )
        self._channels = channels
        self._values_per_channel = int(np.prod(example_shape[1:], dtype=np.int64))
        self._decay = 0.5 ** (1.0 / half_life)
        self._live_mean = self._train_mean.copy()
        self._pending_sum = np.zeros(channels)
        self._pending = 0
        self._seen = 0
        self._lock = threading.Lock()

    @classmethod
    def of(cls, input_bn: BNStats | None, example_shape: Sequence[int]) -> InputShiftMonitor | None:
        """The monitor for a model's input BN, or None when the model had none."""
        if input_bn is None:
            return None
        return cls(input_bn.mean, input_bn.var, input_bn.eps, example_shape)

    def observe(self, batch: np.ndarray) -> None:
        """Fold a batch of examples (`[N, *example_shape]`, or `[N, prod(example_shape)]`) in."""
        count = batch.shape[0]
        if count == 0:
            return
        if count == 1 and self._values_per_channel == 1:
            channel_sums = batch.reshape(self._channels)
        else:
            grouped = batch.reshape(count, self._channels, self._values_per_channel)
            channel_sums = grouped.sum(axis=(0, 2)) / self._values_per_channel
        with self._lock:
            self._pending_sum += channel_sums
            self._pending += count
            self._seen += count
            if self._pending >= FOLD_EVERY:
                self._fold_pending()

    def _fold_pending(self) -> None:
        # The block's mean enters with the weight its examples would have had one by one.
        keep = self._decay**self._pending
        self._live_mean = keep * self._live_mean + (1.0 - keep) * (
            self._pending_sum / self._pending
        )
        self._pending_sum[:] = 0.0
        self._pending = 0

    @property
    def examples_seen(self) -> int:
        return self._seen

    def score(self) -> float:
        """Mean over channels of |live mean − training mean| / training std, each clipped at 10."""
        with self._lock:
            if self._pending:
                self._fold_pending()
            live = self._live_mean.copy()
        shift = np.abs(live - self._train_mean) / self._train_std
        return float(np.minimum(shift, MAX_CHANNEL_SHIFT).mean())
