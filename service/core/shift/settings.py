"""The shift monitor's defaults: how the server runs it (`ShiftSettings`, set by `foldserve serve`'s
flags), and how an export or `foldserve calibrate` fits its reference (recorded with it,
`contract.shift`)."""

from __future__ import annotations

from dataclasses import dataclass

SHIFT_MONITOR = True  # `foldserve serve --shift-monitor on|off`
SHIFT_CHECK_EVERY = 64  # examples a process keeps before folding them into the monitor's state
SHIFT_PUBLISH_SECONDS = 0.5  # --workers N: how often each worker folds and publishes its series
SHIFT_PENDING_ROWS = 64  # at most this many examples wait to be folded in at once
# The environment variable naming the directory where the processes of one server share their
# monitors' state (`foldserve.core.shift.shared`); unset: each process keeps its own.
SHIFT_STATE_DIR_ENV = "FOLDSERVE_SHIFT_STATE_DIR"

# The reference (fitted at export or by `foldserve calibrate`, recorded in the model file).
SHIFT_ARL = 1_000_000.0  # stated average run length between false alarms, examples per model
SHIFT_K = 0.5  # CUSUM reference value: tuned for mean shifts of 1 reference sd (normal scores)
SHIFT_CAP = 6.0  # normal scores are clipped at ±6: one example moves a CUSUM by at most 5.5
SHIFT_TOLERANCE = 0.2  # the ARL holds for clean summaries within 0.2 sd of the reference ...
SHIFT_INFLATION = 1.1  # ... and spread up to 1.1 times its
SHIFT_CLASS_TOLERANCE = 0.2  # ... and class frequencies within 20% of the priors
SHIFT_COMPONENTS = 4  # whitened principal components per group
SHIFT_OUTPUT_COMPONENTS = 3  # ... of the class probabilities
SHIFT_GRID_KNOTS = 41  # knots of each summary's distribution
SHIFT_GRID_REACH = 2.5  # the outermost knot, in normal scores (fewer reference examples: less)
SHIFT_CLASS_RARER = 0.1  # a class test's alternatives: its rate falls to 0.1 of its prior ...
SHIFT_CLASS_MORE = 2.0  # ... or doubles
SHIFT_INPUT_MAX = 4096  # the model input is a group when one example has at most this many values
SHIFT_REPLAY = 100_000  # clean examples replayed at export to check the stated ARL
SHIFT_REPLAY_SEED = 0
SHIFT_SATURATION = 2.0  # a CUSUM saturates at 2 × its threshold: an alarm clears soon after


@dataclass(frozen=True)
class ShiftSettings:
    """The server's monitor settings.

    Attributes:
        enabled: run the monitor.
        check_every: examples a process keeps before folding them into the state (alarms are
            found at the exact example whatever it is; it sets how stale a snapshot may be).
        arl: the stated average run length between false alarms (None: the model file's).
        state_dir: where the processes of one server share their monitors' state (None: each
            process keeps its own): the serving wiring passes `$FOLDSERVE_SHIFT_STATE_DIR`, which
            the supervisor of `--workers N` sets (`foldserve.core.shift.shared.shared_state_dir`).
    """

    enabled: bool = True
    check_every: int = SHIFT_CHECK_EVERY
    arl: float | None = None
    state_dir: str | None = None
