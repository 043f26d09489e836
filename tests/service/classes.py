"""What Triton's classification extension should answer, computed independently of the server:
the top k of each row, highest first (ties: lowest index first), as "value:index[:label]" with
the value written as C's "%f" (or as an integer)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def expected_classes(values: np.ndarray, k: int, labels: Sequence[str] = ()) -> list[list[str]]:
    rows = values.reshape(values.shape[0], -1)
    found = []
    for row in rows.tolist():
        order = sorted(range(len(row)), key=lambda i: (-row[i], i))[:k]
        shown = [f"{row[i]:f}" if isinstance(row[i], float) else str(row[i]) for i in order]
        found.append(
            [
                f"{s}:{i}:{labels[i]}" if labels else f"{s}:{i}"
                for s, i in zip(shown, order, strict=True)
            ]
        )
    return found
