"""The evaluation's table and plot."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

COLUMNS = (
    "stream", "requests", "alarm at", "fired", "peak statistic/threshold", "accuracy",
    "examples per worker",
)  # fmt: skip


@dataclass
class StreamResult:
    """What one stream did to the monitor, and the model's accuracy on it."""

    name: str
    clean: bool
    requests: int
    alarm_at: int  # examples until the first alarm; 0: none
    fired: list[str]
    peak_ratio: float  # highest score / threshold seen on the stream, any layer or the prior
    peak_layer: str
    accuracy: float
    curve: list[tuple[int, float]] = field(default_factory=list)  # (examples, max ratio now)
    workers: int = 1
    examples: int = 0  # examples the monitor tested (every worker's)
    worker_examples: list[int] = field(default_factory=list)  # folded by each worker


def rows(results: Sequence[StreamResult]) -> list[tuple[str, ...]]:
    """One row of cells per stream, in `COLUMNS` order."""
    return [
        (
            r.name,
            str(r.requests),
            str(r.alarm_at) if r.alarm_at else "none",
            ", ".join(r.fired) if r.fired else "-",
            f"{r.peak_ratio:.2f} ({r.peak_layer})",
            f"{r.accuracy:.3f}",
            " + ".join(map(str, r.worker_examples)) or "-",
        )
        for r in results
    ]


def markdown(header: Sequence[str], table: Sequence[Sequence[str]]) -> str:
    """A Markdown table, numbers right-aligned."""
    align = ["---:" if cell[:1].isdigit() or cell == "none" else "---" for cell in table[0]]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in table]
    return "\n".join(lines)


def print_table(title: str, results: Sequence[StreamResult], out: TextIO) -> None:
    """The table of one model: a Markdown table under its title."""
    print(f"\n{title}\n", file=out)
    print(markdown(COLUMNS, rows(results)), file=out)


FALSE_ALARM_COLUMNS = (
    "stated ARL", "clean examples replayed", "alarms", "alarms per 1e6", "measured ARL",
    "peak statistic/threshold",
)  # fmt: skip


def false_alarm_rows(replays: Sequence[dict]) -> list[tuple[str, ...]]:
    """One row per stated ARL: the replay's alarms and measured ARL."""
    return [
        (
            f"{r['stated_arl']:.0e}",
            f"{r['examples']:,}",
            str(r["alarms"]),
            f"{r['per_million']:.3g}",
            f"{r['measured_arl']:.3g}" if r["alarms"] else f"> {r['examples']:,}",
            f"{r['peak']:.2f}",
        )
        for r in replays
    ]


def print_false_alarms(replays: Sequence[dict], out: TextIO) -> None:
    """The false-alarm table: clean replays through the monitor alone."""
    if replays:
        print("\nclean test split replayed through the monitor alone\n", file=out)
        print(markdown(FALSE_ALARM_COLUMNS, false_alarm_rows(replays)), file=out)


def save_plot(results: Sequence[StreamResult], path: Path, title: str = "") -> str:
    """Plot each stream's highest score/threshold over requests into a PNG (matplotlib, Agg).

    Returns:
        What was done, for the user: the file written, or why nothing was.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib import pyplot
    except ImportError:
        return f"no plot: matplotlib is not installed (pip install matplotlib) for {path}"
    figure, axes = pyplot.subplots(figsize=(10, 6))
    axes.set_prop_cycle(color=pyplot.get_cmap("tab20").colors)  # a colour for each stream
    for result in results:
        if not result.curve:
            continue
        x, y = zip(*result.curve, strict=True)
        style = {"color": "black", "linewidth": 2} if result.clean else {"linewidth": 1}
        axes.plot(x, [max(v, 1e-3) for v in y], label=result.name, **style)
    axes.axhline(1.0, color="red", linestyle="--", label="threshold")
    axes.set_xscale("log")
    axes.set_yscale("log")
    axes.set_xlabel("requests")
    axes.set_ylabel("highest CUSUM statistic / threshold (any test)")
    axes.set_title(title)
    axes.legend(fontsize="small", ncol=2)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    pyplot.close(figure)
    return f"plot: {path}"
