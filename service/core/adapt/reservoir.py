"""The recent inputs of one served model, kept for adaptation (`--adapt-reservoir N`).

It keeps user inputs, so it exists only when the setting asks for it: with the setting at 0 no
model has one and no input outlives its call. Its memory is fixed when it is made, N examples of
the model's input as float32, and never grows: each new example overwrites the oldest.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from foldserve.core.model import Model


class Reservoir:
    """The last `capacity` examples of a model's input (a ring buffer, thread-safe).

    Args:
        capacity: how many examples it keeps.
        example_shape: one example's shape (without the batch axis).
    """

    def __init__(self, capacity: int, example_shape: tuple[int, ...]) -> None:
        if capacity < 1:
            raise ValueError("a reservoir keeps at least one example")
        self.example_shape = tuple(example_shape)
        self._rows = np.zeros((capacity, int(np.prod(example_shape))), np.float32)
        self._next = 0  # the row the next example overwrites
        self._seen = 0
        self._lock = threading.Lock()

    @property
    def capacity(self) -> int:
        return self._rows.shape[0]

    @property
    def nbytes(self) -> int:
        """The memory its examples take, fixed at `capacity` examples."""
        return self._rows.nbytes

    @property
    def seen(self) -> int:
        """Examples added since it was made (also those overwritten since)."""
        return self._seen

    def __len__(self) -> int:
        return min(self._seen, self.capacity)

    def add(self, batch: np.ndarray) -> None:
        """Keep a batch of examples (`[N, *example_shape]`, float32), newest last."""
        rows = batch.reshape(batch.shape[0], -1)[-self.capacity :]
        count = rows.shape[0]
        if count == 0 or rows.shape[1] != self._rows.shape[1]:
            return
        with self._lock:
            first = min(count, self.capacity - self._next)
            self._rows[self._next : self._next + first] = rows[:first]
            self._rows[: count - first] = rows[first:]
            self._next = (self._next + count) % self.capacity
            self._seen += batch.shape[0]

    def sample(self) -> np.ndarray:
        """A copy of what it holds, oldest first, `[len(self), *example_shape]`."""
        with self._lock:
            held = len(self)
            rows = np.roll(self._rows, -self._next, axis=0)[self.capacity - held :]
        return rows.reshape(held, *self.example_shape)


def reservoir_for(
    held: Reservoir | None, capacity: int, model: Model
) -> tuple[Reservoir | None, Reservoir | None]:
    """(the model's reservoir, the one `model`'s inputs go to): none when `capacity` is 0 or
    `model` cannot be adapted (not a classifier, no folded BN recorded); `held` unless its
    example shape is not `model`'s."""
    classifier = model.classifier
    if not capacity or classifier is None or not model.bn_stats:
        return held, None
    shape = tuple(classifier.example_shape)
    if held is None or held.example_shape != shape:
        held = Reservoir(capacity, shape)
    return held, held
