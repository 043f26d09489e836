"""What a model's shift monitor watches: its taps, where their values come from, and the
calibration they are scored against.

A model foldserve exported carries tap outputs in its graph (every tapped BN's pre-activations
and their squares, end to end as `taps`): the monitor runs the full graph and reads them. A model
foldserve did not train, folded by `foldserve fold`, has no taps; when one folded BN read its
vector input, the input itself is the tap (`input_tap`). Either way the monitor sees one row of
tap values per example, and scores them alike.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from foldserve.contract import TAPS, ShiftCalibration, Tap
from foldserve.core.shift.input_tap import input_rows
from foldserve.runtime import ort


@dataclass(frozen=True)
class ShiftSource:
    """The taps of one model and their calibration.

    Attributes:
        taps: the tapped BN layers, in the order of a row's values.
        calibration: the thresholds a clean replay set.
        tapped_session: the graph with its `taps` output; None when the taps are the model's
            own (vector) input.
    """

    taps: tuple[Tap, ...]
    calibration: ShiftCalibration
    tapped_session: ort.InferenceSession | None = field(default=None, repr=False, compare=False)

    @property
    def extra_outputs(self) -> tuple[str, ...]:
        """Graph outputs a monitored run fetches besides what the caller asked for."""
        return (TAPS,) if self.tapped_session is not None else ()

    def rows(self, model_input: np.ndarray, outputs: dict[str, np.ndarray]) -> np.ndarray:
        """One tap row per example of a run ([N, width]), taken out of `outputs`."""
        if self.tapped_session is not None:
            return outputs.pop(TAPS)
        return input_rows(model_input)
