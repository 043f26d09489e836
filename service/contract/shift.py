"""The shift monitor's records: the taps (extra graph outputs) and the reference it tests against.

A *tap* is an extra output of the graph that shows one folded BatchNorm layer's pre-activation:
output `tap.<layer>` (`tap_name`), float32 `[batch, channels]` (a conv's channels averaged over
space, which is what the BN's statistics pool over), or, in files written before foldserve 0.2
(`moments` 2), `[batch, 2 · channels]`: the values, then their squares. The output `taps`
(`TAPS`) holds every tap laid end to end, in the order of `foldserve.taps`: one output the server
fetches per call. Which tensor is tapped depends on where the BN went:

- `bn_output` (a BN folded *backward* into the layer before it): the folded layer's own output,
  i.e. what the BN produced;
- `bn_input` (a BN folded *forward* into the layer after it: the input BN): the tensor the BN read.

The *reference* (`ShiftReference` in `contract.reference`; key `foldserve.shift_reference`, or
the file `shift-reference.json` beside the model) is what the monitor tests live traffic against.
It is a list of *groups*, each a slice of one row source: the model input (flattened), the
graph's `taps`, or the class probabilities. A group turns its slice into a few *summaries*, each
a linear projection of the centred slice (a layer's level, its leading whitened principal
components) or the energy left outside them (`residual`), and keeps knots of each summary's
distribution on the reference sample, from which the server makes the summary a normal score
(`foldserve.core.shift.normal_scores`). On those scores two-sided CUSUMs run for the mean and
for the spread, and on the predicted classes CUSUMs for each class becoming rarer or more
frequent than `class_priors`; every threshold follows from the stated `arl` (docs: "How the
shift monitor decides").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from foldserve.contract import fields

TAP_PREFIX = "tap."
TAPS = "taps"  # every tap, end to end
BN_OUTPUT = "bn_output"
BN_INPUT = "bn_input"
TAP_SIDES = (BN_OUTPUT, BN_INPUT)
SHIFT_REFERENCE_FILE = "shift-reference.json"  # beside model.onnx: a reference for any model
SOURCE_INPUT = "input"  # the model's input, one example flattened
SOURCE_TAPS = "taps"  # the graph's `taps` output
SOURCE_PROBABILITIES = "probabilities"  # the class probabilities (softmax of the logits)
SOURCES = (SOURCE_INPUT, SOURCE_TAPS, SOURCE_PROBABILITIES)
# What a group shows, beside a BN's two sides (DescribeModel's `side`; never in a file's taps).
MODEL_INPUT = "model_input"
MODEL_OUTPUT = "model_output"
RESIDUAL = "residual"  # the summary name of a group's residual energy


def tap_name(layer: str) -> str:
    """The graph output that taps BN layer `layer`."""
    return TAP_PREFIX + layer


@dataclass(frozen=True)
class Tap:
    """One tap: the BN layer it shows, its graph output, which side of the BN, conv or not, and
    its layout (`moments` 1: the values; 2: the values, then their squares)."""

    layer: str
    name: str
    side: str
    spatial: bool = False  # a conv's BN: the values are averaged over space
    moments: int = 2

    def to_json(self) -> dict[str, Any]:
        return {
            "layer": self.layer,
            "name": self.name,
            "side": self.side,
            "spatial": self.spatial,
            "moments": self.moments,
        }

    @classmethod
    def from_json(cls, value: Any, where: str) -> Tap:
        entry = fields.json_object(value, where)
        moments = entry.get("moments", 2)  # files before foldserve 0.2: values and squares
        if moments not in (1, 2) or type(moments) is not int:
            raise fields.ContractError(f"{where}.moments: expected 1 or 2, got {moments!r}")
        return cls(
            layer=fields.text(entry, "layer", where),
            name=fields.text(entry, "name", where),
            side=fields.choice(entry, "side", TAP_SIDES, where),
            spatial=fields.flag(entry, "spatial", where),
            moments=moments,
        )
