"""The multi-seed evaluation's tables: the worst seed against the issue's targets, one worker
against two, and the clean replays' false alarms against the stated ARL."""

from __future__ import annotations

from collections.abc import Sequence

from foldserve.bench.shift_eval.report import StreamResult

# (streams, the most requests until the alarm the issue asks for); None: must never alarm.
TARGETS = [
    (("clean",), None),
    (("invert", "noise s=4 (gross)"), 10),
    (("intensity x0.5", "intensity x1.5"), 200),
    (("hflip", "noise s=2 (strong)", "classes 0-4"), 300),
    (("noise s=1 (weak)", "translate 1px", "heavy ink", "light ink"), 600),
]
WORKERS_WITHIN = 1.2  # requests to alarm with workers: at most this times one worker's


def target(name: str) -> int | str | None:
    for names, limit in TARGETS:
        if name in names:
            return limit
    return "?"


def _by_stream(
    per_seed: dict[int, list[StreamResult]],
) -> dict[str, list[tuple[int, StreamResult]]]:
    by_stream: dict[str, list[tuple[int, StreamResult]]] = {}
    for seed, results in per_seed.items():
        for result in results:
            by_stream.setdefault(result.name, []).append((seed, result))
    return by_stream


def worst(per_seed: dict[int, list[StreamResult]]) -> list[tuple[str, ...]]:
    """Per stream, the worst seed: the latest alarm (a shift) or the highest peak (clean)."""
    table = []
    for name, entries in _by_stream(per_seed).items():
        limit = target(name)
        if limit is None:  # clean: the worst seed is the one closest to (or over) its threshold
            _, r = max(entries, key=lambda e: (bool(e[1].alarm_at), e[1].peak_ratio))
            met = not any(e[1].alarm_at for e in entries)
            goal = f"no alarm in {len(entries)} x {r.requests}"
        else:
            _, r = max(entries, key=lambda e: e[1].alarm_at or 10**9)
            met = all(0 < e[1].alarm_at <= limit for e in entries)  # type: ignore[operator]
            goal = f"<= {limit}"
        alarms = [e[1].alarm_at for e in sorted(entries, key=lambda e: e[0])]
        table.append(
            (
                name,
                str(r.alarm_at) if r.alarm_at else "none",
                ", ".join(r.fired) or "-",
                f"{r.peak_ratio:.2f} ({r.peak_layer})",
                f"{min(e[1].accuracy for e in entries):.3f}",
                " ".join(str(a) if a else "-" for a in alarms),
                goal,
                "met" if met else "MISSED",
            )
        )
    return table


def worker_table(
    one: dict[int, list[StreamResult]], other: dict[int, list[StreamResult]], workers: Sequence[int]
) -> tuple[tuple[str, ...], list[tuple[str, ...]]]:
    """Per stream, each seed's requests to alarm with one worker count and the other, the
    largest ratio over the seeds, and how the examples were spread over the workers."""
    a, b = _by_stream(one), _by_stream(other)
    header = (
        "stream", f"alarm at, each seed ({workers[0]} worker)", f"({workers[1]} workers)",
        "largest ratio", "examples per worker (worst spread)", f"within {WORKERS_WITHIN}x",
    )  # fmt: skip
    rows = []
    for name, entries in a.items():
        pairs = sorted(zip(sorted(entries), sorted(b.get(name, [])), strict=False))
        ratios = [y.alarm_at / x.alarm_at for (_, x), (_, y) in pairs if x.alarm_at and y.alarm_at]
        alarms = [x.alarm_at == 0 and y.alarm_at == 0 for (_, x), (_, y) in pairs]
        spread = min((y for _, y in b.get(name, [])), key=_balance, default=None)
        ok = all(alarms) if target(name) is None else bool(ratios) and max(ratios) <= WORKERS_WITHIN
        rows.append(
            (
                name,
                " ".join(str(x.alarm_at or "-") for (_, x), _ in pairs),
                " ".join(str(y.alarm_at or "-") for _, (_, y) in pairs),
                f"{max(ratios):.2f}" if ratios else "-",
                " + ".join(map(str, spread.worker_examples)) if spread else "-",
                "yes" if ok else "NO",
            )
        )
    return header, rows


def _balance(result: StreamResult) -> float:
    shares = result.worker_examples
    return min(shares) / max(shares) if len(shares) > 1 and max(shares) else 0.0


def false_alarm_table(replays: dict[int, list[dict]]) -> tuple[tuple[str, ...], list]:
    """Per stated ARL, the clean replays of every seed summed: alarms and measured ARL."""
    header = (
        "stated ARL", "clean examples replayed", "alarms", "alarms per 1e6", "measured ARL",
        "alarms per seed",
    )  # fmt: skip
    by_arl: dict[float, list[dict]] = {}
    for rows in replays.values():
        for row in rows:
            by_arl.setdefault(row["stated_arl"], []).append(row)
    table = []
    for arl, rows in by_arl.items():
        examples = sum(r["examples"] for r in rows)
        alarms = sum(r["alarms"] for r in rows)
        measured = f"{examples / alarms:.3g}" if alarms else f"> {examples:,}"
        table.append(
            (
                f"{arl:.0e}", f"{examples:,}", str(alarms), f"{alarms * 1e6 / examples:.3g}",
                measured, " ".join(str(r["alarms"]) for r in rows),
            )
        )  # fmt: skip
    return header, table
