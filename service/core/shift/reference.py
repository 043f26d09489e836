"""Fitting the shift monitor's reference from a sample of clean rows (numpy only).

Export fits it from the training and validation splits run through the exported graph
(`foldserve.core.shift.calibrate`), `foldserve calibrate` from a sample of a foreign model's inputs;
both call `fit_reference`, so the server tests any model the same way.

Each group's summaries:

- `level`: the mean over the slice's units of `(x − mean) / std` (units that never vary left
  out): the overall brightness of an input, the overall activation of a layer;
- `pc1`…: the leading principal components of a Ledoit-Wolf shrinkage covariance of the slice,
  whitened (unit variance on the sample);
- `residual` (asked for per group, up to `RESIDUAL_MAX_WIDTH` units: it costs width² per
  example): the squared Mahalanobis norm of what the components leave out, under the same
  covariance, to the power 1/3. Shrinkage keeps it finite where the sample never varies (a
  blank border pixel): ink there counts in units of the typical pixel's spread.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from foldserve.contract import RESIDUAL, SOURCE_PROBABILITIES, ShiftReference, SummaryGroup
from foldserve.core.shift.normal_scores import fit_knots, z_grid
from foldserve.core.shift.settings import (
    SHIFT_ARL,
    SHIFT_CAP,
    SHIFT_CLASS_MORE,
    SHIFT_CLASS_RARER,
    SHIFT_CLASS_TOLERANCE,
    SHIFT_GRID_KNOTS,
    SHIFT_GRID_REACH,
    SHIFT_INFLATION,
    SHIFT_K,
    SHIFT_TOLERANCE,
)

LEVEL = "level"
CONSTANT_STD = 1e-6  # a unit whose std is under this fraction of the slice's largest is constant
DEGENERATE = 1e-10  # a component whose variance is under this fraction of the largest is none
# A residual costs width² per example: groups wider than this get none (level and components).
RESIDUAL_MAX_WIDTH = 128


@dataclass(frozen=True)
class GroupSpec:
    """One group to fit: a slice of a row source, and which summaries it gets."""

    name: str
    source: str
    start: int
    width: int
    components: int
    residual: bool = False
    level: bool = True


def ledoit_wolf(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Mean, Ledoit-Wolf shrinkage covariance and shrinkage (Ledoit and Wolf 2004) of [N, D]."""
    mean = values.mean(axis=0)
    x = values - mean
    n, d = x.shape
    sample = x.T @ x / n
    target = np.trace(sample) / d
    dispersion = np.sum((sample - target * np.eye(d)) ** 2) / d
    spread = np.sum((x * x).T @ (x * x)) / n - np.sum(sample**2)  # Σ_k ||x_k x_kᵀ − S||² / n
    spread = min(max(spread / (n * d), 0.0), dispersion)
    shrinkage = spread / dispersion if dispersion > 0 else 1.0
    covariance = shrinkage * target * np.eye(d) + (1.0 - shrinkage) * sample
    return mean, covariance, float(shrinkage)


def _level_row(values: np.ndarray, center: np.ndarray) -> np.ndarray:
    std = np.sqrt(((values - center) ** 2).mean(axis=0))
    varies = std > CONSTANT_STD * max(float(std.max()), 1e-300)
    row = np.zeros_like(center)
    row[varies] = 1.0 / (varies.sum() * std[varies])
    return row


def _components(covariance: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues (descending) and eigenvectors (columns), each sign fixed so that its
    largest loading is positive: the same file from the same data, whatever LAPACK does."""
    values, vectors = np.linalg.eigh(covariance)
    order = np.argsort(values)[::-1]
    values, vectors = np.maximum(values[order], 1e-300), vectors[:, order]
    signs = np.sign(vectors[np.abs(vectors).argmax(axis=0), np.arange(vectors.shape[1])])
    return values, vectors * np.where(signs == 0, 1.0, signs)


def group_summaries(
    values: np.ndarray,
    center: np.ndarray,
    projections: np.ndarray,
    residual: np.ndarray | None,
) -> np.ndarray:
    """The summaries of a group for rows of its slice ([N, width] → [N, summaries])."""
    centred = values - center
    out = [centred @ projections.T] if len(projections) else []
    if residual is not None and len(residual):
        out.append(np.cbrt(((centred @ residual.T) ** 2).sum(axis=1, keepdims=True)))
    return np.concatenate(out, axis=1)


def fit_group(spec: GroupSpec, values: np.ndarray, grid: np.ndarray) -> SummaryGroup | None:
    """A group's summaries and their knots, from its slice of the sample ([N, width]); None when
    the sample does not vary in it at all."""
    values = np.asarray(values, np.float64)
    center, covariance, shrinkage = ledoit_wolf(values)
    unit_var = ((values - center) ** 2).mean(axis=0)
    if not unit_var.max() > 0:
        return None
    eigenvalues, vectors = _components(covariance)
    count = min(spec.components, spec.width - (1 if spec.residual else 0))
    # Components along which the sample does not vary cannot be whitened: left out.
    count = min(count, int((eigenvalues > DEGENERATE * eigenvalues[0]).sum()))
    rows, names = [], []
    if spec.level and spec.source != SOURCE_PROBABILITIES:
        rows.append(_level_row(values, center))
        names.append(LEVEL)
    for j in range(count):
        rows.append(vectors[:, j] / np.sqrt(eigenvalues[j]))
        names.append(f"pc{j + 1}")
    projections = np.array(rows).reshape(len(rows), spec.width)
    residual = None
    rest = eigenvalues[count:] > DEGENERATE * eigenvalues[0]
    if spec.residual and rest.any() and spec.width <= RESIDUAL_MAX_WIDTH:
        residual = (vectors[:, count:][:, rest] / np.sqrt(eigenvalues[count:][rest])).T
        names.append(RESIDUAL)
    summaries = group_summaries(values, center, projections, residual)
    return SummaryGroup(
        name=spec.name,
        source=spec.source,
        start=spec.start,
        width=spec.width,
        center=tuple(center.tolist()),
        var=tuple(unit_var.tolist()),
        summaries=tuple(names),
        projections=tuple(tuple(row) for row in projections.tolist()),
        residual=() if residual is None else tuple(tuple(row) for row in residual.tolist()),
        knots=tuple(tuple(row) for row in fit_knots(summaries, grid).tolist()),
        shrinkage=shrinkage,
    )


def fit_reference(
    specs: Sequence[GroupSpec],
    sources: dict[str, np.ndarray],
    class_priors: Sequence[float],
    data: str,
    arl: float = SHIFT_ARL,
    k: float = SHIFT_K,
    cap: float = SHIFT_CAP,
) -> ShiftReference:
    """The reference of a sample: `sources` maps each source to its rows ([N, width], the same
    N examples), `class_priors` the training class frequencies (empty: no class tests)."""
    examples = len(next(iter(sources.values())))
    grid = z_grid(examples, SHIFT_GRID_REACH, SHIFT_GRID_KNOTS)
    fitted = (
        fit_group(spec, sources[spec.source][:, spec.start : spec.start + spec.width], grid)
        for spec in specs
    )
    groups = tuple(group for group in fitted if group is not None)
    return ShiftReference(
        arl=arl,
        k=k,
        cap=cap,
        grid=(float(grid[0]), float(grid[-1]), len(grid)),
        data=data,
        examples=examples,
        groups=groups,
        class_priors=tuple(float(p) for p in class_priors),
        class_rarer=SHIFT_CLASS_RARER,
        class_more=SHIFT_CLASS_MORE,
        tolerance=SHIFT_TOLERANCE,
        inflation=SHIFT_INFLATION,
        class_tolerance=SHIFT_CLASS_TOLERANCE,
    )
