"""Small Markdown builders: tables, figures and number formats."""

from __future__ import annotations

from collections.abc import Sequence

from foldserve.training.lab.claims import fmt


def table(headers: Sequence[str], rows: Sequence[Sequence[object]], align: str = "") -> str:
    """A Markdown table; `align` holds one of l/r per column (default: first left, rest right)."""
    align = align or "l" + "r" * (len(headers) - 1)
    rule = ["---" if a == "l" else "---:" for a in align]
    # A bare | inside a cell would end it (|log ratio|, |Δ|): escape it.
    cells = [[str(cell).replace("|", "\\|") for cell in row] for row in [headers, *rows]]
    lines = [cells[0], rule, *cells[1:]]
    return "\n".join("| " + " | ".join(line) + " |" for line in lines) + "\n"


def figure(name: str, caption: str) -> str:
    """An image link relative to the report (the figures sit beside it)."""
    return f"![{caption}]({name})\n\n*{caption}*\n"


def pm(stat: dict, digits: int = 3) -> str:
    """`mean ± std` (see `claims.fmt`)."""
    return fmt(stat, digits)


def pct(value: float) -> str:
    return f"{value:.1%}"
