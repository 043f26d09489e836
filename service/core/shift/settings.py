"""The shift monitor's defaults: how the server runs it (`ShiftSettings`, set by `foldserve serve`'s
flags), and how an export calibrates it (recorded in the model file, `contract.shift`)."""

from __future__ import annotations

from dataclasses import dataclass

SHIFT_MONITOR = True  # `foldserve serve --shift-monitor on|off`
SHIFT_CHECK_EVERY = 16  # examples between two scorings of the live state (the alarm's resolution)
SHIFT_PUBLISH_SECONDS = 5.0  # --workers N: how often each worker publishes its shift series
SHIFT_PENDING_ROWS = 64  # at most this many examples wait to be folded into the state at once
SHIFT_HALF_LIFE = 100.0  # examples after which an observation's weight has halved
SHIFT_MARGIN = 1.5  # layer and sentinel thresholds: this times the clean replay's maximum
SHIFT_PRIOR_MARGIN = 2.0  # class-prior threshold: this times the clean replay's maximum
SHIFT_REPLAY = 20_000  # requests in the clean replay that calibrates the thresholds
SHIFT_REPLAY_SEED = 0
SHIFT_MIN_VAR_FRACTION = 0.01  # units under this fraction of their layer's median variance
SHIFT_VAR_FLOOR = 0.01  # a unit's live variance counts as at least this times its reference
SHIFT_CLIP = 5.0  # examples enter the averages winsorized at this many reference stds
SHIFT_RESAMPLE_EVERY = 1000  # replay requests per bootstrap resample of the held-out examples


@dataclass(frozen=True)
class ShiftSettings:
    """The server's monitor settings (margins None: the model file's)."""

    enabled: bool = True
    check_every: int = SHIFT_CHECK_EVERY
    margin: float | None = None
    prior_margin: float | None = None
