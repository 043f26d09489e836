"""The shift monitor's statistics on synthetic streams whose distribution is known: normal scores,
the reference's summaries, the CUSUM walk, and the average run lengths the thresholds promise.

The ARL checks simulate many replications at once (vectorized numpy) with short ARLs (500 to
2000 examples), so each runs in well under a second; their seeds are fixed, and their tolerances
are about four Monte Carlo standard errors plus the approximation's own error (Siegmund's
approximation is within ~2% at these thresholds).
"""

import math
from dataclasses import replace

import numpy as np
import pytest

from foldserve.contract import SOURCE_INPUT, SOURCE_PROBABILITIES
from foldserve.core.shift.bank import TestBank, class_test, robust_threshold
from foldserve.core.shift.cusum import (
    gaussian_threshold,
    lattice_arl,
    lattice_threshold,
    siegmund_arl,
    walk,
)
from foldserve.core.shift.normal_scores import (
    NormalScores,
    Spread,
    fit_knots,
    normal_cdf,
    normal_quantile,
    z_grid,
)
from foldserve.core.shift.reference import GroupSpec, fit_reference, ledoit_wolf
from foldserve.core.shift.replay import replay
from foldserve.core.shift.summaries import Summaries

REPLICATIONS = 4000


def _run_lengths(draw, k: float, h: float, seed: int, limit: int = 200_000) -> np.ndarray:
    """Run lengths of `REPLICATIONS` one-sided CUSUMs (reference k, threshold h) fed by
    `draw(rng, n)`, all at once."""
    rng = np.random.default_rng(seed)
    state = np.zeros(REPLICATIONS)
    lengths = np.zeros(REPLICATIONS)
    alive = np.ones(REPLICATIONS, bool)
    for step in range(1, limit):
        state = np.maximum(state + draw(rng, REPLICATIONS) - k, 0.0)
        stopped = alive & (state > h)
        lengths[stopped] = step
        alive &= ~stopped
        if not alive.any():
            return lengths
    raise AssertionError("some CUSUM never stopped")


@pytest.mark.parametrize("arl", [500.0, 2000.0])
@pytest.mark.parametrize("k", [0.25, 0.5])
def test_a_gaussian_cusum_runs_as_long_as_its_calibration_says(arl, k):
    h = gaussian_threshold(k, arl)
    assert siegmund_arl(k, h) == pytest.approx(arl)
    lengths = _run_lengths(lambda rng, n: rng.standard_normal(n), k, h, seed=int(arl + 10 * k))
    error = lengths.std() / math.sqrt(REPLICATIONS)
    assert abs(lengths.mean() - arl) < 4 * error + 0.03 * arl, (lengths.mean(), arl)


def test_a_robust_threshold_holds_its_arl_at_the_edge_of_its_tolerance():
    """The threshold set for N(μ, σ²) with |μ| ≤ 0.2, σ ≤ 1.1 keeps the ARL there, and is far
    longer on N(0, 1)."""
    arl, k = 1000.0, 0.5
    h = robust_threshold(k, arl, tolerance=0.2, inflation=1.1)
    worst = _run_lengths(lambda rng, n: rng.normal(0.2, 1.1, n), k, h, seed=1)
    error = worst.std() / math.sqrt(REPLICATIONS)
    assert abs(worst.mean() - arl) < 4 * error + 0.03 * arl
    assert siegmund_arl(k, h) > 20 * arl


def test_a_lattice_cusum_runs_as_long_as_its_markov_chain_says():
    """The class test of a class with prior 0.1 becoming rarer: exact ARL, and a simulation."""
    test = class_test(0, 0.1, 0.1, arl=1500.0)
    assert not test.on_hit and test.up == 1 and test.down == 24
    exact = lattice_arl(0.9, 1, test.down, test.threshold)
    assert exact >= 1500.0 > lattice_arl(0.9, 1, test.down, test.threshold - 1)
    rng = np.random.default_rng(2)
    state, lengths = np.zeros(REPLICATIONS), np.zeros(REPLICATIONS)
    alive = np.ones(REPLICATIONS, bool)
    for step in range(1, 100_000):
        hits = rng.random(REPLICATIONS) < 0.1
        state = np.maximum(state + np.where(hits, -test.down, 1), 0)
        stopped = alive & (state >= test.threshold)
        lengths[stopped], alive = step, alive & ~stopped
        if not alive.any():
            break
    error = lengths.std() / math.sqrt(REPLICATIONS)
    assert abs(lengths.mean() - exact) < 4 * error


def test_thresholds_that_cannot_hold_are_refused():
    with pytest.raises(ValueError, match="does not drift down"):
        lattice_threshold(0.6, 1, 1, 1e6)
    with pytest.raises(ValueError, match="under the reference value"):
        robust_threshold(0.5, 1e6, tolerance=0.5, inflation=1.0)


def test_the_walk_of_a_batch_equals_one_update_per_example():
    rng = np.random.default_rng(3)
    increments = rng.normal(-0.2, 1.5, (300, 6))
    start = np.array([0.0, 1.0, 5.0, 0.0, 3.0, 9.0])
    cap = np.array([1e9, 1e9, 1e9, 4.0, 6.0, 8.0])
    state, expected = start.copy(), []
    for row in increments:
        state = np.minimum(np.maximum(state + row, 0.0), cap)
        expected.append(state.copy())
    np.testing.assert_allclose(walk(start, increments.T.copy(), cap).T, expected, atol=1e-9)
    uncapped = np.full(6, 1e9)  # the closed form, no example at the cap
    state, expected = start.copy(), []
    for row in increments:
        state = np.maximum(state + row, 0.0)
        expected.append(state.copy())
    np.testing.assert_allclose(walk(start, increments.T.copy(), uncapped).T, expected, atol=1e-9)


def test_normal_scores_are_standard_normal_on_the_reference_distribution():
    rng = np.random.default_rng(4)
    sample = np.stack([rng.standard_normal(3000), rng.exponential(size=3000)], axis=1)
    grid = z_grid(len(sample), 2.5, 41)
    scores = NormalScores(fit_knots(sample, grid), grid, cap=6.0)
    fresh = np.stack([rng.standard_normal(100_000), rng.exponential(size=100_000)], axis=1)
    z = scores(fresh)
    # Knots from 3000 examples: each quantile uncertain by about 1/sqrt(3000) = 0.02 sd.
    np.testing.assert_allclose(z.mean(axis=0), 0.0, atol=0.05)
    np.testing.assert_allclose(z.std(axis=0), 1.0, atol=0.05)
    assert np.abs(z).max() <= 6.0
    u = Spread(6.0)(z)
    np.testing.assert_allclose(u.mean(axis=0), 0.0, atol=0.04)
    np.testing.assert_allclose(u.std(axis=0), 1.0, atol=0.05)
    p = np.array([1e-9, 0.01, 0.3, 0.5, 0.97])
    np.testing.assert_allclose(normal_cdf(normal_quantile(p)), p, rtol=1e-7)


def test_ledoit_wolf_is_the_usual_estimator():
    from sklearn.covariance import LedoitWolf

    x = np.random.default_rng(5).normal(size=(80, 30)) @ np.diag(np.linspace(0.1, 3, 30))
    _, covariance, shrinkage = ledoit_wolf(x)
    fitted = LedoitWolf().fit(x)
    np.testing.assert_allclose(covariance, fitted.covariance_, rtol=1e-9, atol=1e-12)
    assert shrinkage == pytest.approx(fitted.shrinkage_)


def _reference(arl: float = 1e6):
    rng = np.random.default_rng(6)
    mix = rng.normal(size=(5, 5))
    x = rng.normal(size=(3000, 5)) @ mix + np.arange(5.0)
    share = 1 / (1 + np.exp(-x[:, :1]))  # a probability that varies with the input
    probabilities = np.concatenate([share, 1 - share], axis=1)
    specs = [
        GroupSpec("input", SOURCE_INPUT, 0, 5, 2, residual=True),
        GroupSpec("out", SOURCE_PROBABILITIES, 0, 2, 1),
    ]
    sources = {SOURCE_INPUT: x, SOURCE_PROBABILITIES: probabilities}
    return fit_reference(specs, sources, (0.5, 0.5), "synthetic", arl=arl), mix


def test_summaries_whiten_the_reference_and_see_a_shift():
    reference, mix = _reference()
    group = reference.groups[0]
    assert group.summaries == ("level", "pc1", "pc2", "residual")
    assert reference.groups[1].summaries == ("pc1",)  # no level for probabilities
    summaries = Summaries(reference, {SOURCE_INPUT: 0, SOURCE_PROBABILITIES: 5}, 7)
    rng = np.random.default_rng(7)
    x = rng.normal(size=(20_000, 5)) @ mix + np.arange(5.0)
    share = 1 / (1 + np.exp(-x[:, :1]))
    rows = np.concatenate([x, share, 1 - share], axis=1)
    raw = summaries.raw(rows)
    np.testing.assert_allclose(raw[:, 1:3].std(axis=0), 1.0, atol=0.05)  # whitened components
    z = summaries(rows)[:, :4]
    np.testing.assert_allclose(z.mean(axis=0), 0.0, atol=0.05)
    shifted = summaries(rows + np.r_[np.full(5, 0.5), 0.0, 0.0])[:, :4]  # every input unit up
    assert shifted[:, 0].mean() > 0.5


def test_a_monitors_false_alarms_on_clean_traffic_are_no_more_than_its_arl_says():
    """The whole bank (mean and spread tests of every summary, the class tests) replayed on
    fresh draws of the reference's distribution, with a short stated ARL and no tolerance: the
    measured ARL is at least the stated one (the union bound over its tests), within Monte Carlo
    error, and not many times more (the bound is not loose by orders of magnitude)."""
    reference, mix = _reference()
    reference = replace(reference, tolerance=0.0, inflation=1.0, class_tolerance=0.0)
    rng = np.random.default_rng(8)
    x = rng.normal(size=(50_000, 5)) @ mix + np.arange(5.0)
    labels = (rng.random(len(x)) < 0.5).astype(np.int64)
    share = 1 / (1 + np.exp(-x[:, :1]))
    sources = {SOURCE_INPUT: x, SOURCE_PROBABILITIES: np.concatenate([share, 1 - share], 1)}
    result = replay(reference, sources, labels, ["a", "b"], 400_000, seed=9, arl=500.0)
    assert result.alarms > 20
    assert 500.0 * (1 - 4 / math.sqrt(result.alarms)) < result.arl < 5 * 500.0
    bank = TestBank(reference, ["s"] * 4, ["a", "b"], arl=500.0)
    assert bank.test_arl == pytest.approx(500.0 * (4 * 4 + 2 * 2))
