"""The shift monitor's records in a model file: the taps (extra graph outputs) and the calibration.

A *tap* is an extra output of the graph that shows one folded BatchNorm layer's pre-activation:
output `tap.<layer>` (`tap_name`), float32 of shape `[batch, 2 · channels]`: the channels' values,
then their squares. For a convolution each is averaged over space (the channel's mean over space,
then the mean over space of its square), which is what the BN's statistics describe, pooled over
batch and space. The output `taps` (`TAPS`) holds every tap laid end to end, in the order of
`foldserve.taps`: one output the server fetches per call. Which tensor is tapped depends on where
the BN went:

- `bn_output` (a BN folded *backward* into the layer before it): the folded layer's own output,
  i.e. what the BN produced. On training data each unit is distributed with mean `beta` and
  variance `gamma² · var / (var + eps)`.
- `bn_input` (a BN folded *forward* into the layer after it: the input BN): the tensor the BN read
  (the model input, or an activation), with mean `mean` and variance `var`.

The *calibration* is what a clean replay of held-out data measured at export: each layer's highest
score, from which its alarm threshold is `margin ×` that maximum, and the same for the sentinels
and the class-prior signal. Server-side margins recompute thresholds with `with_margins`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

from foldserve.contract import fields

TAP_PREFIX = "tap."
TAPS = "taps"  # every tap, end to end
BN_OUTPUT = "bn_output"
BN_INPUT = "bn_input"
TAP_SIDES = (BN_OUTPUT, BN_INPUT)
# A sentinel's threshold never sits below what this many outlying examples in a row produce.
SENTINEL_FLOOR_EXAMPLES = 4


def tap_name(layer: str) -> str:
    """The graph output that taps BN layer `layer`."""
    return TAP_PREFIX + layer


@dataclass(frozen=True)
class Tap:
    """One tap: the BN layer it shows, its graph output, which side of the BN, conv or not."""

    layer: str
    name: str
    side: str
    spatial: bool = False  # a conv's BN: the moments are averaged over space

    def to_json(self) -> dict[str, Any]:
        return {"layer": self.layer, "name": self.name, "side": self.side, "spatial": self.spatial}

    @classmethod
    def from_json(cls, value: Any, where: str) -> Tap:
        entry = fields.json_object(value, where)
        return cls(
            layer=fields.text(entry, "layer", where),
            name=fields.text(entry, "name", where),
            side=fields.choice(entry, "side", TAP_SIDES, where),
            spatial=fields.flag(entry, "spatial", where),
        )


@dataclass(frozen=True)
class LayerCalibration:
    """One tapped layer's calibration: which units the sentinel watches instead of the Gaussian
    statistic (training variance too small to describe), and the clean maxima and thresholds."""

    layer: str
    clean_max: float
    threshold: float
    excluded: tuple[int, ...] = ()
    sentinel_clean_max: float = 0.0
    sentinel_threshold: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "layer": self.layer,
            "clean_max": self.clean_max,
            "threshold": self.threshold,
            "excluded": list(self.excluded),
            "sentinel_clean_max": self.sentinel_clean_max,
            "sentinel_threshold": self.sentinel_threshold,
        }

    @classmethod
    def from_json(cls, value: Any, where: str) -> LayerCalibration:
        entry = fields.json_object(value, where)
        excluded = entry.get("excluded", [])
        if not isinstance(excluded, list) or not all(type(i) is int and i >= 0 for i in excluded):
            raise fields.ContractError(f"{where}.excluded: expected a list of unit indices")
        optional = {k: entry.get(k, 0.0) for k in ("sentinel_clean_max", "sentinel_threshold")}
        return cls(
            layer=fields.text(entry, "layer", where),
            clean_max=fields.number(entry, "clean_max", where, minimum=0.0),
            threshold=fields.number(entry, "threshold", where, minimum=0.0),
            excluded=tuple(excluded),
            **{k: fields.number(optional, k, where, minimum=0.0) for k in optional},
        )


@dataclass(frozen=True)
class ShiftCalibration:
    """How the monitor's thresholds were set at export, and the settings they hold for.

    Attributes:
        half_life: requests after which an observation's weight has halved (the thresholds hold
            for this half-life only).
        margin: layer and sentinel thresholds are `margin ×` their clean maximum.
        prior_margin: the class-prior threshold is `prior_margin ×` its clean maximum.
        replay: requests in the clean replay.
        data: what was replayed (e.g. "digits validation split, 270 examples").
        min_var_fraction: units whose training variance is under this fraction of their layer's
            median (or under 100·eps) are watched by the sentinel, not the Gaussian statistic.
        var_floor: a unit's live variance counts as at least `var_floor ×` its reference
            variance (bounds the log-variance term of one unit at ½·ln(1/var_floor)).
        clip: each example enters the averages winsorized at `clip` reference standard
            deviations from the reference mean (a sentinel's units: `clip` of its scales), so
            one odd example moves a score by little and only a shift moves it far.
        resample_every: the replay streamed a fresh bootstrap resample of the held-out examples
            every this many requests, so the maxima cover how another sample of that size would
            differ, not only another order of this one.
        layers: one entry per tap, in tap order.
        class_priors: the training split's class frequencies, in class-index order.
    """

    half_life: float
    margin: float
    prior_margin: float
    replay: int
    data: str
    min_var_fraction: float
    var_floor: float
    layers: tuple[LayerCalibration, ...]
    class_priors: tuple[float, ...]
    prior_clean_max: float
    prior_threshold: float
    clip: float = math.inf
    resample_every: int = 0

    @property
    def decay(self) -> float:
        """Per-request weight kept by the exponentially weighted averages."""
        return 0.5 ** (1.0 / self.half_life)

    @property
    def sentinel_floor(self) -> float:
        """The least clean maximum a sentinel is calibrated at: what `SENTINEL_FLOOR_EXAMPLES`
        examples in a row at the clip (or one scale away, unclipped) would move it. Held-out
        data may never touch a near-constant unit, and a threshold of 0 would fire on one odd
        example."""
        step = self.clip if math.isfinite(self.clip) else 1.0
        return SENTINEL_FLOOR_EXAMPLES * (1.0 - self.decay) * step

    def with_margins(self, margin: float | None, prior_margin: float | None) -> ShiftCalibration:
        """The calibration with thresholds recomputed for other margins (None: keep)."""
        margin = self.margin if margin is None else margin
        prior_margin = self.prior_margin if prior_margin is None else prior_margin
        floor = self.sentinel_floor
        layers = tuple(
            replace(
                layer,
                threshold=margin * layer.clean_max,
                sentinel_threshold=margin * max(layer.sentinel_clean_max, floor)
                if layer.excluded
                else 0.0,
            )
            for layer in self.layers
        )
        return replace(
            self,
            margin=margin,
            prior_margin=prior_margin,
            layers=layers,
            prior_threshold=prior_margin * self.prior_clean_max,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "half_life": self.half_life,
            "margin": self.margin,
            "prior_margin": self.prior_margin,
            "replay": self.replay,
            "data": self.data,
            "min_var_fraction": self.min_var_fraction,
            "var_floor": self.var_floor,
            "layers": [layer.to_json() for layer in self.layers],
            "class_priors": list(self.class_priors),
            "prior_clean_max": self.prior_clean_max,
            "prior_threshold": self.prior_threshold,
            "clip": self.clip if math.isfinite(self.clip) else None,
            "resample_every": self.resample_every,
        }

    @classmethod
    def from_json(cls, value: Any, where: str) -> ShiftCalibration:
        entry = fields.json_object(value, where)
        replay = _count(entry, "replay", where)
        if replay < 1:
            raise fields.ContractError(f"{where}.replay: expected a positive integer")
        half_life = fields.number(entry, "half_life", where, minimum=0.0)
        var_floor = fields.number(entry, "var_floor", where, minimum=0.0)
        if half_life <= 0 or not 0 < var_floor <= 1:
            raise fields.ContractError(
                f"{where}: half_life must be > 0 and var_floor in (0, 1], got "
                f"{half_life} and {var_floor}"
            )
        priors = fields.numbers(entry, "class_priors", where, minimum=0.0)
        if not math.isclose(sum(priors), 1.0, abs_tol=1e-6):
            raise fields.ContractError(f"{where}.class_priors: must sum to 1, sum {sum(priors)}")
        return cls(
            half_life=half_life,
            margin=fields.number(entry, "margin", where, minimum=0.0),
            prior_margin=fields.number(entry, "prior_margin", where, minimum=0.0),
            replay=replay,
            data=fields.text(entry, "data", where),
            min_var_fraction=fields.number(entry, "min_var_fraction", where, minimum=0.0),
            var_floor=var_floor,
            layers=tuple(
                LayerCalibration.from_json(item, w)
                for w, item in fields.items(entry, "layers", where)
            ),
            class_priors=priors,
            prior_clean_max=fields.number(entry, "prior_clean_max", where, minimum=0.0),
            prior_threshold=fields.number(entry, "prior_threshold", where, minimum=0.0),
            clip=_clip(entry, where),
            resample_every=_count(entry, "resample_every", where),
        )


def _clip(entry: dict[str, Any], where: str) -> float:
    """`clip`: a positive number, or null (absent) for none."""
    if entry.get("clip") is None:
        return math.inf
    value = fields.number(entry, "clip", where, minimum=0.0)
    if value <= 0:
        raise fields.ContractError(f"{where}.clip: expected a positive number or null")
    return value


def _count(entry: dict[str, Any], name: str, where: str) -> int:
    value = entry.get(name, 0)
    if type(value) is not int or value < 0:
        raise fields.ContractError(f"{where}.{name}: expected a positive integer, got {value!r}")
    return value
