"""The reference of a model without one: its input BatchNorm's statistics.

A file folded by `foldserve fold` records its BN statistics but carries no reference (no sample
of its traffic went with it; `foldserve calibrate` makes one from a sample). When one folded BN
read the model input, a vector of exactly its channels, its running mean and variance describe
each input feature; the server then fits the input group's summaries on inputs drawn from
N(mean, var) per feature (seeded), so the tests run as for any model. That is the reference *if*
the features are independent and Gaussian: correlated, skewed or heavy-tailed features look
shifted to it, so it is a floor (`foldserve calibrate` on real inputs is the remedy). The class
priors are unknown: no class tests.
"""

from __future__ import annotations

import numpy as np

from foldserve.contract import SOURCE_INPUT, BNStats, ShiftReference
from foldserve.core.graph import Classifier
from foldserve.core.shift.reference import GroupSpec, fit_reference
from foldserve.core.shift.settings import SHIFT_COMPONENTS, SHIFT_REPLAY_SEED

NULL_DATA = "Gaussian sample of the input BatchNorm's statistics (no sample of real inputs)"
NULL_EXAMPLES = 5000


def input_bn(bn_stats: tuple[BNStats, ...], classifier: Classifier | None) -> BNStats | None:
    """The input BN's statistics, None when there is none: no classifier, no BN over the model
    input, or an input that is not a vector of its channels."""
    stats = next((s for s in bn_stats if s.reads_model_input), None)
    if classifier is None or stats is None or classifier.example_shape != (stats.num_features,):
        return None
    return stats


def input_bn_reference(stats: BNStats) -> ShiftReference:
    """A reference fitted on Gaussian inputs drawn from the BN's statistics."""
    rng = np.random.default_rng(SHIFT_REPLAY_SEED)
    mean, sd = np.asarray(stats.mean), np.sqrt(np.asarray(stats.var))
    sample = rng.normal(mean, sd, size=(NULL_EXAMPLES, mean.size))
    spec = GroupSpec(SOURCE_INPUT, SOURCE_INPUT, 0, mean.size, SHIFT_COMPONENTS, residual=True)
    return fit_reference([spec], {SOURCE_INPUT: sample}, (), NULL_DATA)
