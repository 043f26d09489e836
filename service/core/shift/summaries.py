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

    Rows come whole (`[B, width]`) or as their sources' parts (`[B, source width]` each, in
    offset order): each group reads its slice of its own part.

    Attributes:
        names: `<group>/<summary>`, in score order: every group's linear summaries, then every
            residual.
        width: the row width the summaries read up to.
    """

    def __init__(self, reference: ShiftReference, offsets: Mapping[str, int], width: int) -> None:
        self.width = width
        order = sorted(offsets, key=offsets.__getitem__)
        self._bounds = [
            (offsets[source], offsets[nxt] if nxt else width)
            for source, nxt in zip(order, [*order[1:], None], strict=True)
        ]
        names, knots, residual_names, residual_knots = [], [], [], []
        self._linear: list[tuple[int, int, int, np.ndarray, np.ndarray]] = []
        self._residuals: list[tuple[int, int, int, np.ndarray, np.ndarray]] = []
        for group in reference.groups:
            part, start = order.index(group.source), group.start
            center = np.asarray(group.center)
            count = len(group.projections)
            if count:
                matrix = np.asarray(group.projections).T  # [width, count]
                slot = (part, start, start + group.width, matrix, center @ matrix)
                self._linear.append(slot)
                names += [f"{group.name}/{name}" for name in group.summaries[:count]]
                knots += group.knots[:count]
            if group.residual:
                matrix = np.asarray(group.residual).T  # [width, r]
                slot = (part, start, start + group.width, matrix, center @ matrix)
                self._residuals.append(slot)
                residual_names.append(f"{group.name}/{group.summaries[-1]}")
                residual_knots.append(group.knots[-1])
        self.names = (*names, *residual_names)
        first_z, last_z, count = reference.grid
        grid = np.linspace(first_z, last_z, count)
        self._scores = NormalScores(np.array(knots + residual_knots), grid, reference.cap)

    def parts(self, rows: np.ndarray | tuple[np.ndarray, ...]) -> tuple[np.ndarray, ...]:
        """Rows as their sources' parts (views of whole rows; parts as they are)."""
        if isinstance(rows, np.ndarray):
            return tuple(rows[:, start:stop] for start, stop in self._bounds)
        return rows

    def raw(self, rows: np.ndarray | tuple[np.ndarray, ...]) -> np.ndarray:
        """The summaries themselves ([B, row width], or its parts → [B, S]).

        One product per group on its own slice, at most `BLAS_ROWS` rows at a time: small
        enough that BLAS runs it on the calling thread (a serving process has its cores busy
        already).
        """
        rows = self.parts(rows)
        batch = len(rows[0])
        if batch > BLAS_ROWS:
            return np.concatenate(
                [
                    self.raw(tuple(part[at : at + BLAS_ROWS] for part in rows))
                    for at in range(0, batch, BLAS_ROWS)
                ]
            )
        values = []
        for part, start, stop, matrix, bias in self._linear:
            projected = rows[part][:, start:stop] @ matrix
            projected -= bias
            values.append(projected)
        for part, start, stop, matrix, bias in self._residuals:
            projected = rows[part][:, start:stop] @ matrix
            projected -= bias
            values.append(np.cbrt(np.einsum("ij,ij->i", projected, projected))[:, None])
        return np.concatenate(values, axis=1)

    def __call__(self, rows: np.ndarray | tuple[np.ndarray, ...]) -> np.ndarray:
        """The normal scores of a batch of rows ([B, row width], or its parts → [B, S])."""
        return self._scores(self.raw(rows))
