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


class Summaries:
    """The summaries of a reference over rows whose sources start at `offsets`.

    Attributes:
        names: `<group>/<summary>`, in score order.
        width: the row width the summaries read up to.
    """

    def __init__(self, reference: ShiftReference, offsets: Mapping[str, int], width: int) -> None:
        self.width = width
        names, columns, biases, residuals, order = [], [], [], [], []
        linear_count = 0
        for group in reference.groups:
            first = offsets[group.source] + group.start
            center = np.asarray(group.center)
            for name, row in zip(group.summaries, group.projections, strict=False):
                column = np.zeros(width)
                column[first : first + group.width] = row
                columns.append(column)
                biases.append(float(center @ np.asarray(row)))
                order.append(linear_count)
                linear_count += 1
                names.append(f"{group.name}/{name}")
            if group.residual:
                matrix = np.asarray(group.residual).T  # [width, r]
                residuals.append((first, first + group.width, matrix, center @ matrix))
                order.append(-len(residuals))
                names.append(f"{group.name}/{group.summaries[-1]}")
        self.names = tuple(names)
        self._matrix = np.array(columns).T.reshape(width, linear_count)
        self._bias = np.array(biases)
        self._residuals = residuals
        # Where each score comes from: linear column i, or residual -(j + 1).
        self._order = np.array(
            [i if i >= 0 else linear_count - i - 1 for i in order], dtype=np.int64
        )
        knots = np.array([row for group in reference.groups for row in group.knots])
        first_z, last_z, count = reference.grid
        self._scores = NormalScores(knots, np.linspace(first_z, last_z, count), reference.cap)

    def raw(self, rows: np.ndarray) -> np.ndarray:
        """The summaries themselves ([B, row width] → [B, S])."""
        rows = np.asarray(rows, np.float64)
        parts = [rows @ self._matrix - self._bias]
        for start, stop, matrix, bias in self._residuals:
            projected = rows[:, start:stop] @ matrix - bias
            parts.append(np.cbrt(np.einsum("ij,ij->i", projected, projected))[:, None])
        values = np.concatenate(parts, axis=1) if len(parts) > 1 else parts[0]
        return values[:, self._order]

    def __call__(self, rows: np.ndarray) -> np.ndarray:
        """The normal scores of a batch of rows ([B, row width] → [B, S])."""
        return self._scores(self.raw(rows))
