"""The report's tables of figures: one table per figure, a row per measurement (workload and
load), a column per server (the baselines on each runtime, foldserve, the peer), and foldserve's
ratio to the fastest echo at the end. Every cell is "median (min–max)" over the rounds."""

from __future__ import annotations

from collections.abc import Iterator

from foldserve.bench.suite.rounds import IN_FLIGHT, SEQUENTIAL, STREAMS
from foldserve.bench.suite.servers import FOLDSERVE
from foldserve.bench.suite.workloads import STREAM, UNARY

# A row: (label, section, workload, level).
Row = tuple[str, str, str, int]


def value(entry: object, digits: int = 0) -> str:
    """A spread as "median (min–max)", or "–" for none."""
    if not isinstance(entry, dict) or "median" not in entry:
        return "–"
    median, low, high = entry["median"], entry["min"], entry["max"]
    if len(entry["rounds"]) == 1 or low == high:
        return f"{median:,.{digits}f}"
    return f"{median:,.{digits}f} ({low:,.{digits}f}–{high:,.{digits}f})"


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    """A Markdown table, the first column left-aligned and the others right."""
    aligns = ["---"] + ["---:"] * (len(header) - 1)
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(aligns) + " |"]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def entry(result: dict, section: str, workload: str, server: str, level: int) -> dict:
    """The summary of one measurement in the result's JSON ({} if it was not made)."""
    if section == SEQUENTIAL:
        return result[SEQUENTIAL].get(workload, {}).get(server) or {}
    if section == IN_FLIGHT:
        return result[IN_FLIGHT].get(workload, {}).get(server, {}).get(str(level)) or {}
    return result[STREAMS].get(server, {}).get(str(level)) or {}


def _levels(result: dict) -> list[int]:
    flight = result[IN_FLIGHT]
    return sorted({int(level) for w in flight.values() for s in w.values() for level in s})


def _workloads(result: dict) -> list[str]:
    return [w for w in UNARY if w in result[SEQUENTIAL] or w in result[IN_FLIGHT]]


def unary_rows(result: dict, sequential: bool = True, in_flight: bool = True) -> Iterator[Row]:
    """The unary measurements of the run, workload by workload."""
    for workload in _workloads(result):
        if sequential:
            yield f"{workload}, sequential", SEQUENTIAL, workload, 1
        if in_flight:
            for level in _levels(result):
                yield f"{workload}, {level} in flight", IN_FLIGHT, workload, level


def stream_rows(result: dict) -> Iterator[Row]:
    counts = sorted({int(c) for server in result[STREAMS].values() for c in server})
    for count in counts:
        yield f"{count} PredictStream", STREAMS, STREAM, count


def _ratio(cell: dict, figure: str) -> str:
    ratio = (cell.get("over_echo") or {}).get(figure)
    if not ratio:
        return "–"
    return f"{value(ratio, 2)} ({ratio['echo']})"


def figure_table(result: dict, figure: str, digits: int, measured: list[Row]) -> list[str]:
    """`figure` of every server for each measurement of `measured`, with foldserve's ratio to
    the fastest echo; servers with no cell in any row are left out."""
    names = [s["name"] for s in result["servers"]]
    cells = {row: {n: entry(result, row[1], row[2], n, row[3]) for n in names} for row in measured}
    shown = [n for n in names if any(figure in cells[row][n] for row in measured)]
    body = []
    for row in measured:
        line = [row[0], *(value(cells[row][n].get(figure), digits) for n in shown)]
        body.append([*line, _ratio(cells[row].get(FOLDSERVE, {}), figure)])
    return table(["measurement", *shown, "foldserve / fastest echo"], body)


def client_line(result: dict) -> str:
    """How busy the load generator was at most: near one core, it would be the bottleneck."""
    busiest = 0.0
    for row in [*unary_rows(result), *stream_rows(result)]:
        for server in result["servers"]:
            cores = entry(result, row[1], row[2], server["name"], row[3]).get("client_cpu_cores")
            if isinstance(cores, dict):
                busiest = max(busiest, float(cores["max"]))
    return f"h2load used at most {busiest:.2f} of a core in any measurement."
