"""How big a lab run is: the full run (minutes on two CPU cores) and `--quick` (seconds)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LabConfig:
    """Sizes of every experiment; everything else (architectures, targets) is fixed in them.

    Attributes:
        name: "full" or "quick", printed in the report.
        seeds: the seeds each repeated measurement runs with (weights, shuffling, noise).
        learning_rates: SGD rates of the learning-speed comparison (at the first the plain
            network crawls, at the last it fails to learn at all).
        reference_lr: the rate of the distribution and smoothness measurements.
        steps: optimizer steps per learning-speed run.
        eval_every: steps between validation and distribution measurements.
        probe_every: steps between smoothness probes (loss and gradient along the gradient).
        batch_sizes: mini-batch sizes of the regularization comparison.
        gap_epochs: epochs of each regularization run.
        sample_batches: mini-batches drawn per size to measure the spread of batch statistics.
        model_epochs: epochs of the test-time and covariate-shift runs (40: `foldserve train`).
        momenta: BN running-average momenta of the test-time comparison.
        short_epochs: epochs of the momentum runs (short, so that a slow average still lags).
    """

    name: str
    seeds: tuple[int, ...]
    learning_rates: tuple[float, ...]
    reference_lr: float
    steps: int
    eval_every: int
    probe_every: int
    batch_sizes: tuple[int, ...]
    gap_epochs: int
    sample_batches: int
    model_epochs: int
    momenta: tuple[float, ...]
    short_epochs: int


FULL = LabConfig(
    name="full",
    seeds=(0, 1, 2),
    learning_rates=(0.02, 0.1, 2.0),
    reference_lr=0.1,
    steps=1200,
    eval_every=40,
    probe_every=100,
    batch_sizes=(16, 64, 256),
    gap_epochs=20,
    sample_batches=400,
    model_epochs=40,
    momenta=(0.003, 0.01, 0.1, 0.5, 0.9),
    short_epochs=15,
)

QUICK = LabConfig(
    name="quick",
    seeds=(0, 1),
    learning_rates=(0.1, 2.0),
    reference_lr=0.1,
    steps=120,
    eval_every=20,
    probe_every=40,
    batch_sizes=(32, 256),
    gap_epochs=3,
    sample_batches=50,
    model_epochs=5,
    momenta=(0.01, 0.9),
    short_epochs=3,
)
