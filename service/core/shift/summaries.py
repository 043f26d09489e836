"""Live rows → the normal scores of every summary of a reference, a batch at a time.

A row is what one example gives the monitor: its sources laid end to end (`ShiftSource.rows`),
each group a slice of one of them. Every linear summary of every group is one column of one
matrix, so a batch of rows becomes all of them in one product; the residuals are one product per
group that has one. The normal scores follow (`normal_scores`).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from foldserve.contract import ShiftReference
from foldserve.core.shift.normal_scores import NormalScores

# Rows per product: OpenBLAS runs a product of over 2^18 multiply-adds on every core, which in a
# serving process (its cores busy with requests) costs far more than it saves.
BLAS_ROWS = 64


class Summaries:
    """The summaries of a reference over rows whose sources start at `offsets`.

    Attributes:
        names: `<group>/<summary>`, in score order: every group's linear summaries, then every
            residual.
        width: the row width the summaries read up to.
    """

    def __init__(self, reference: ShiftReference, offsets: Mapping[str, int], width: int) -> None:
        self.width = width
        names, knots, residual_names, residual_knots = [], [], [], []
        self._linear: list[tuple[int, int, np.ndarray, np.ndarray]] = []
        self._residuals: list[tuple[int, int, np.ndarray, np.ndarray]] = []
        for group in reference.groups:
            first = offsets[group.source] + group.start
            center = np.asarray(group.center)
            count = len(group.projections)
            if count:
                matrix = np.asarray(group.projections).T  # [width, count]
                self._linear.append((first, first + group.width, matrix, center @ matrix))
                names += [f"{group.name}/{name}" for name in group.summaries[:count]]
                knots += group.knots[:count]
            if group.residual:
                matrix = np.asarray(group.residual).T  # [width, r]
                self._residuals.append((first, first + group.width, matrix, center @ matrix))
                residual_names.append(f"{group.name}/{group.summaries[-1]}")
                residual_knots.append(group.knots[-1])
        self.names = (*names, *residual_names)
        first_z, last_z, count = reference.grid
        grid = np.linspace(first_z, last_z, count)
        self._scores = NormalScores(np.array(knots + residual_knots), grid, reference.cap)

    def raw(self, rows: np.ndarray) -> np.ndarray:
        """The summaries themselves ([B, row width] → [B, S]).

        One product per group on its own slice: small enough that BLAS runs it on the calling
        thread (a serving process has its cores busy already).
        """
        rows = np.asarray(rows, np.float64)
        if len(rows) > BLAS_ROWS:
            return np.concatenate(
                [self.raw(rows[at : at + BLAS_ROWS]) for at in range(0, len(rows), BLAS_ROWS)]
            )
        parts = []
        for start, stop, matrix, bias in self._linear:
            values = rows[:, start:stop] @ matrix
            values -= bias
            parts.append(values)
        for start, stop, matrix, bias in self._residuals:
            projected = rows[:, start:stop] @ matrix
            projected -= bias
            parts.append(np.cbrt(np.einsum("ij,ij->i", projected, projected))[:, None])
        return np.concatenate(parts, axis=1)

    def __call__(self, rows: np.ndarray) -> np.ndarray:
        """The normal scores of a batch of rows ([B, row width] → [B, S])."""
        return self._scores(self.raw(rows))
