"""Each claim of the lecture and the papers, set against this run's numbers, with a verdict.

A verdict is computed from the numbers by the rule its function's docstring states ("beyond
noise": two means differ by more than the sum of their standard deviations over seeds); the
text quotes the numbers it rests on, so a reader can check the rule.
"""

from __future__ import annotations

from foldserve.training.lab.claims.common import beyond_noise, fmt
from foldserve.training.lab.claims.noise import (
    batch_noise,
    bigger_batch_weakens,
    bn_regularizes,
    dropout_stronger,
)
from foldserve.training.lab.claims.serving import (
    bn_and_input_shift,
    covariate_shift,
    folding,
    precise_bn,
    test_time,
)
from foldserve.training.lab.claims.training import (
    coupling,
    distribution_stability,
    learning_speed,
    noisy_bn,
    smoothness,
)

__all__ = ["CLAIMS", "all_claims", "beyond_noise", "fmt"]

CLAIMS = (
    learning_speed,
    distribution_stability,
    coupling,
    noisy_bn,
    smoothness,
    batch_noise,
    bn_regularizes,
    dropout_stronger,
    bigger_batch_weakens,
    test_time,
    folding,
    precise_bn,
    covariate_shift,
    bn_and_input_shift,
)


def all_claims(results: dict) -> list[dict]:
    """Every claim, in order, with its measurement and verdict."""
    return [claim(results) for claim in CLAIMS]
