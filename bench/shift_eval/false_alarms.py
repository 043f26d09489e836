"""The monitor's false alarms on clean traffic, measured without a server; and, for a server with
workers, how many examples each worker folded into the shared state.

`false_alarms` replays bootstrap draws of the model's clean test split (the pool the clean
stream sends) through the very tests the server runs (`core.shift.replay`): at the model's
stated ARL, and at shorter stated ARLs, where alarms are frequent enough to count, so that the
stated and the measured run lengths stand side by side.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from foldserve.core.loading import load_model
from foldserve.core.shift.calibrate import run_sources
from foldserve.core.shift.replay import replay
from foldserve.core.shift.shared import SUFFIX
from foldserve.core.shift.state import FIELDS, HEADER, SLOTS, StateView
from foldserve.runtime import ort

SHORTER_ARLS = (1e3, 1e4, 1e5)  # stated ARLs short enough that a replay counts their alarms


def false_alarms(model_path: Path, examples: int, seed: int = 0) -> list[dict]:
    """Per stated ARL (the model's, then `SHORTER_ARLS`): examples replayed, alarms, alarms per
    million and the measured ARL."""
    if examples <= 0:
        return []
    from foldserve.bench.shift_eval.run import test_split

    model = load_model(model_path)
    x, _ = test_split(model_path)
    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    taps = model.training.taps if model.training is not None else ()
    sources, labels = run_sources(session, model.classifier, x, bool(taps))
    reference = model.shift.reference
    rows = []
    for arl in (reference.arl, *SHORTER_ARLS):
        result = replay(reference, sources, labels, model.class_labels, examples, seed, arl)
        rows.append(
            {
                "stated_arl": arl,
                "examples": result.examples,
                "alarms": result.alarms,
                "per_million": result.alarms * 1e6 / result.examples,
                "measured_arl": result.arl,
                "peak": result.peak,
                "first": [(at, list(tests)) for at, tests in result.first[:3]],
            }
        )
    return rows


def worker_shares(state_dir: Path) -> list[int]:
    """Examples each process folded into the shared states in `state_dir` (summed over the
    versions' files), largest first."""
    shares: dict[int, int] = {}
    for name in os.listdir(state_dir):
        if not name.endswith(SUFFIX):
            continue
        values = np.fromfile(state_dir / name, dtype=np.float64)
        tests = (len(values) - HEADER - 2 * SLOTS) // len(FIELDS)
        for pid, count in StateView.of(values, tests).slots:
            if count > 0:
                shares[int(pid)] = shares.get(int(pid), 0) + int(count)
    return sorted(shares.values(), reverse=True)
