"""The evaluation's traffic: the clean digits test split and shifted versions of it (numpy only).

Pixels of the digits set run from 0 to 16; every shifted image is clipped back into that range,
as a real sensor would saturate. Each stream is a pool of examples with their true labels; a
stream of requests visits its pool in shuffled passes (seeded).

- `clean`: the test split the model never saw (the split recorded in the model's metadata).
- `intensity x0.5` / `x1.5`: pixel scale halved, or raised by half (a sensor's gain).
- `grey +4`: a grey background, every pixel raised by 4 (a sensor's offset).
- `noise s=1|2|4`: additive Gaussian noise of that standard deviation (weak, strong, gross).
- `translate 1px`: every image moved one pixel right (a zero column enters on the left).
- `hflip`: mirrored left to right.
- `invert`: 16 - pixel.
- `classes 0-4`: the clean test images of classes 0 to 4 only (prior shift, no covariate one).
- `heavy ink` / `light ink`: in each class, the third of writers with the most (least) ink:
  the same classes in the same proportions, a different population ("black cats versus
  coloured cats").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

MAX_PIXEL = 16.0
SIDE = 8  # digits images are 8x8
NOISE = {"weak": 1.0, "strong": 2.0, "gross": 4.0}


@dataclass(frozen=True)
class Stream:
    """A named pool of examples (flat rows, float32) and their true class indices."""

    name: str
    features: np.ndarray
    labels: np.ndarray
    clean: bool = False

    def requests(self, count: int, seed: int) -> np.ndarray:
        """`count` indices into the pool: shuffled passes over all of it."""
        rng = np.random.default_rng(seed)
        passes = -(-count // len(self.labels))
        order = [rng.permutation(len(self.labels)) for _ in range(passes)]
        return np.concatenate(order)[:count]


def _images(x: np.ndarray) -> np.ndarray:
    return x.reshape(-1, SIDE, SIDE)


def _clip(x: np.ndarray) -> np.ndarray:
    return np.clip(x, 0.0, MAX_PIXEL).astype(np.float32).reshape(len(x), -1)


def _translated(x: np.ndarray) -> np.ndarray:
    images = _images(x)
    moved = np.zeros_like(images)
    moved[:, :, 1:] = images[:, :, :-1]
    return _clip(moved)


def _ink_thirds(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Masks of the heaviest and lightest third of writers within each class."""
    ink = x.sum(axis=1)
    heavy, light = np.zeros(len(y), bool), np.zeros(len(y), bool)
    for label in np.unique(y):
        members = np.flatnonzero(y == label)
        low, high = np.quantile(ink[members], [1 / 3, 2 / 3])
        heavy[members[ink[members] >= high]] = True
        light[members[ink[members] <= low]] = True
    return heavy, light


def digits_streams(x: np.ndarray, y: np.ndarray, seed: int = 0) -> list[Stream]:
    """Every evaluation stream from the clean test split `x` (`[N, 64]`, 0..16) and labels `y`."""
    rng = np.random.default_rng(seed)
    heavy, light = _ink_thirds(x, y)
    shifted: list[tuple[str, Callable[[], np.ndarray], np.ndarray]] = [
        ("intensity x0.5", lambda: _clip(x * 0.5), y),
        ("intensity x1.5", lambda: _clip(x * 1.5), y),
        ("grey +4", lambda: _clip(x + 4.0), y),
        *(
            (
                f"noise s={sigma:g} ({level})",
                lambda s=sigma: _clip(x + rng.normal(0, s, x.shape)),
                y,
            )
            for level, sigma in NOISE.items()
        ),
        ("translate 1px", lambda: _translated(x), y),
        ("hflip", lambda: _clip(_images(x)[:, :, ::-1]), y),
        ("invert", lambda: _clip(MAX_PIXEL - x), y),
        ("classes 0-4", lambda: _clip(x[y < 5]), y[y < 5]),
        ("heavy ink", lambda: _clip(x[heavy]), y[heavy]),
        ("light ink", lambda: _clip(x[light]), y[light]),
    ]
    streams = [Stream("clean", _clip(x), y, clean=True)]
    streams += [Stream(name, make(), labels) for name, make, labels in shifted]
    return streams
