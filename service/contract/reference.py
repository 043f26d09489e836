"""The shift monitor's reference: the summary groups and the tests' settings (`contract.shift`
documents what they mean). Parsed from `foldserve.shift_reference` or `shift-reference.json`."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from foldserve.contract import fields
from foldserve.contract.shift import SOURCES


@dataclass(frozen=True)
class SummaryGroup:
    """Summaries of one slice of a row source.

    Attributes:
        name: what the slice is (`input`, a BN layer's name, `probabilities`).
        source: `input`, `taps` or `probabilities` (`SOURCES`).
        start, width: the slice's columns in that source's row.
        center, var: the slice's reference mean and variance per unit, `[width]`.
        summaries: the summaries' names: one per projection, then `residual` if any.
        projections: one row `[width]` per linear summary, applied to the centred slice.
        residual: rows `[width]` whitening what the projections leave out; the residual summary
            is the cube root of the squared norm of those rows times the centred slice
            (near-Gaussian: Wilson and Hilferty). Empty: no residual summary.
        knots: per summary, its reference quantiles at the normal scores of the grid.
        shrinkage: the Ledoit-Wolf shrinkage of the covariance the components came from.
    """

    name: str
    source: str
    start: int
    width: int
    center: tuple[float, ...]
    var: tuple[float, ...]
    summaries: tuple[str, ...]
    projections: tuple[tuple[float, ...], ...]
    residual: tuple[tuple[float, ...], ...]
    knots: tuple[tuple[float, ...], ...]
    shrinkage: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "source": self.source,
            "start": self.start,
            "width": self.width,
            "center": list(self.center),
            "var": list(self.var),
            "summaries": list(self.summaries),
            "projections": [list(row) for row in self.projections],
            "residual": [list(row) for row in self.residual],
            "knots": [list(row) for row in self.knots],
            "shrinkage": self.shrinkage,
        }

    @classmethod
    def from_json(cls, value: Any, where: str) -> SummaryGroup:
        entry = fields.json_object(value, where)
        width = _count(entry, "width", where, minimum=1)
        names = entry.get("summaries")
        if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
            raise fields.ContractError(f"{where}.summaries: expected a list of names")
        projections = _rows(entry, "projections", where, width)
        residual = _rows(entry, "residual", where, width)
        expected = len(projections) + (1 if residual else 0)
        if len(names) != expected:
            raise fields.ContractError(
                f"{where}.summaries: {len(names)} names for {expected} summaries"
            )
        knots = _rows(entry, "knots", where, None)
        if len(knots) != len(names):
            raise fields.ContractError(f"{where}.knots: {len(knots)} rows for {len(names)} names")
        return cls(
            name=fields.text(entry, "name", where),
            source=fields.choice(entry, "source", SOURCES, where),
            start=_count(entry, "start", where),
            width=width,
            center=fields.numbers(entry, "center", where, width),
            var=fields.numbers(entry, "var", where, width, minimum=0.0),
            summaries=tuple(names),
            projections=projections,
            residual=residual,
            knots=knots,
            shrinkage=fields.number(entry, "shrinkage", where, minimum=0.0)
            if "shrinkage" in entry
            else 0.0,
        )


@dataclass(frozen=True)
class ShiftReference:
    """What the shift monitor tests live traffic against, and how sure it must be to alarm.

    Attributes:
        arl: the stated average run length between false alarms, in examples, of the whole
            monitor: every test gets an equal share of the false-alarm rate `1/arl`.
        k: the CUSUMs' reference value on normal scores (the mean shift, in reference standard
            deviations, they are tuned for is 2k).
        cap: normal scores are clipped at ±cap (one example moves a CUSUM by at most cap − k).
        grid: the knots' normal scores: (first, last, count), evenly spaced.
        data: what the reference sample was (e.g. "digits training and validation splits").
        examples: how many examples it held.
        groups: the summary groups, in row order.
        class_priors: the training class frequencies in class-index order (empty: no class
            tests).
        class_rarer, class_more: the class tests' alternatives, as ratios of each prior (a class
            falling to 0.1 of its prior, or rising to 2 times it).
        tolerance, inflation: the thresholds keep `arl` for clean traffic whose summaries' means
            are within `tolerance` reference sds of the reference's and whose sds are at most
            `inflation` times its: room for the reference sample's own error and for new
            examples being a little unlike the training ones.
        class_tolerance: likewise for the class tests: any class frequency within this fraction
            of its prior.
        replay, replay_data, replay_alarms, replay_peak: the check at fitting time: clean
            examples replayed through the tests (how many, and what), the alarms they raised and
            the highest statistic/threshold they reached.
    """

    arl: float
    k: float
    cap: float
    grid: tuple[float, float, int]
    data: str
    examples: int
    groups: tuple[SummaryGroup, ...]
    class_priors: tuple[float, ...] = ()
    class_rarer: float = 0.1
    class_more: float = 2.0
    tolerance: float = 0.0
    inflation: float = 1.0
    class_tolerance: float = 0.0
    replay: int = 0
    replay_data: str = ""
    replay_alarms: int = 0
    replay_peak: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "arl": self.arl,
            "k": self.k,
            "cap": self.cap,
            "grid": list(self.grid),
            "data": self.data,
            "examples": self.examples,
            "groups": [group.to_json() for group in self.groups],
            "class_priors": list(self.class_priors),
            "class_rarer": self.class_rarer,
            "class_more": self.class_more,
            "tolerance": self.tolerance,
            "inflation": self.inflation,
            "class_tolerance": self.class_tolerance,
            "replay": self.replay,
            "replay_data": self.replay_data,
            "replay_alarms": self.replay_alarms,
            "replay_peak": self.replay_peak,
        }

    @classmethod
    def from_json(cls, value: Any, where: str) -> ShiftReference:
        entry = fields.json_object(value, where)
        grid = _grid(entry, where)
        groups = tuple(
            SummaryGroup.from_json(g, w) for w, g in fields.items(entry, "groups", where)
        )
        for group in groups:
            if any(len(row) != grid[2] for row in group.knots):
                raise fields.ContractError(f"{where}: group {group.name!r}: knots != grid count")
        reference = cls(
            arl=fields.number(entry, "arl", where, minimum=2.0),
            k=fields.number(entry, "k", where, minimum=0.0),
            cap=fields.number(entry, "cap", where, minimum=0.0),
            grid=grid,
            data=fields.text(entry, "data", where),
            examples=_count(entry, "examples", where),
            groups=groups,
            class_priors=_priors(entry, where),
            class_rarer=_ratio(entry, "class_rarer", 0.1, where),
            class_more=_ratio(entry, "class_more", 2.0, where),
            tolerance=_ratio(entry, "tolerance", 0.0, where, zero=True),
            inflation=_ratio(entry, "inflation", 1.0, where),
            class_tolerance=_ratio(entry, "class_tolerance", 0.0, where, zero=True),
            replay=_count(entry, "replay", where),
            replay_data=str(entry.get("replay_data", "")),
            replay_alarms=_count(entry, "replay_alarms", where),
            replay_peak=_ratio(entry, "replay_peak", 0.0, where, zero=True),
        )
        _check(reference, where)
        return reference


def _grid(entry: dict[str, Any], where: str) -> tuple[float, float, int]:
    grid = entry.get("grid")
    if (
        not isinstance(grid, list)
        or len(grid) != 3
        or type(grid[2]) is not int
        or grid[2] < 2
        or not all(isinstance(g, int | float) and math.isfinite(g) for g in grid[:2])
        or not grid[0] < grid[1]
    ):
        raise fields.ContractError(f"{where}.grid: expected [first, last, count >= 2]")
    return float(grid[0]), float(grid[1]), int(grid[2])


def _priors(entry: dict[str, Any], where: str) -> tuple[float, ...]:
    if not entry.get("class_priors"):
        return ()
    priors = fields.numbers(entry, "class_priors", where, minimum=0.0)
    if not math.isclose(sum(priors), 1.0, abs_tol=1e-6):
        raise fields.ContractError(f"{where}.class_priors: must sum to 1, sum {sum(priors)}")
    return priors


def _check(reference: ShiftReference, where: str) -> None:
    if not 0 <= reference.tolerance < reference.k < reference.cap:
        raise fields.ContractError(f"{where}: expected 0 <= tolerance < k < cap")
    if not reference.class_rarer < 1 < reference.class_more or reference.inflation < 1:
        raise fields.ContractError(
            f"{where}: expected class_rarer < 1 < class_more and inflation >= 1"
        )
    if reference.class_tolerance >= 1:
        raise fields.ContractError(f"{where}.class_tolerance: expected under 1")


def _rows(
    entry: dict[str, Any], name: str, where: str, width: int | None
) -> tuple[tuple[float, ...], ...]:
    rows = entry.get(name, [])
    if not isinstance(rows, list):
        raise fields.ContractError(f"{where}.{name}: expected a list of rows")
    return tuple(
        fields.numbers({"row": row}, "row", f"{where}.{name}[{i}]", width)
        for i, row in enumerate(rows)
    )


def _count(entry: dict[str, Any], name: str, where: str, minimum: int = 0) -> int:
    value = entry.get(name, 0)
    if type(value) is not int or value < minimum:
        raise fields.ContractError(
            f"{where}.{name}: expected an integer >= {minimum}, got {value!r}"
        )
    return value


def _ratio(
    entry: dict[str, Any], name: str, default: float, where: str, zero: bool = False
) -> float:
    value = fields.number({name: entry.get(name, default)}, name, where, minimum=0.0)
    if value <= 0 and not zero:
        raise fields.ContractError(f"{where}.{name}: expected a positive number")
    return value
