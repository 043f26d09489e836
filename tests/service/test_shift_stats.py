"""The shift statistic on synthetic Gaussian streams whose shift is known."""

import math

import numpy as np
import pytest

from foldserve.contract import BN_INPUT, BN_OUTPUT, BNStats, Tap
from foldserve.core.shift.stats import ShiftStatistic, js_bits, references, unit_reference

UNITS = 200
HALF_LIFE = 100.0


def _stats(mean, var, gamma=None, beta=None, eps=1e-5, layer="0") -> BNStats:
    n = len(mean)
    return BNStats(
        layer=layer, folded_into="1", direction="forward", mean=tuple(mean), var=tuple(var),
        gamma=tuple(gamma or [1.0] * n), beta=tuple(beta or [0.0] * n), eps=eps,
    )  # fmt: skip


def _statistic(
    stats: BNStats, side: str = BN_INPUT, classes: int = 10, clip: float = math.inf
) -> ShiftStatistic:
    refs = references([stats], [Tap(stats.layer, "tap.0", side)], min_var_fraction=0.01)
    return ShiftStatistic(refs, HALF_LIFE, 0.01, [1.0 / classes] * classes, clip)


def _stream(statistic, values: np.ndarray, labels: np.ndarray | None = None) -> np.ndarray:
    """Feed examples one at a time (taps: values then squares); the final scores."""
    running = statistic.new_state()
    labels = np.zeros(len(values), int) if labels is None else labels
    for row, label in zip(values, labels, strict=True):
        running.add(np.concatenate([row, row * row])[None, :], np.array([label]))
    return statistic.scores(running)


@pytest.fixture(scope="module")
def reference():
    rng = np.random.default_rng(0)
    mean, std = rng.normal(0, 5, UNITS), rng.uniform(0.5, 3.0, UNITS)
    return _stats(mean, std**2), mean, std


def test_traffic_from_the_reference_scores_near_zero(reference):
    stats, mean, std = reference
    x = np.random.default_rng(1).normal(mean, std, (1500, UNITS))
    assert _stream(_statistic(stats), x)[0] < 0.15


@pytest.mark.parametrize("delta", [0.5, 1.0, 2.0])
def test_a_mean_shift_scores_its_size_in_training_stds(reference, delta):
    stats, mean, std = reference
    x = np.random.default_rng(2).normal(mean + delta * std, std, (1500, UNITS))
    assert _stream(_statistic(stats), x)[0] == pytest.approx(delta, abs=0.05)


def _mean_noise(ratio: float) -> float:
    """E|m - mean| / std of an exponentially weighted mean of N(mean, (ratio * std)²) draws."""
    a = 0.5 ** (1 / HALF_LIFE)
    return ratio * math.sqrt(2 / math.pi) * math.sqrt((1 - a) / (1 + a))


@pytest.mark.parametrize("ratio", [0.5, 2.0, 3.0])
def test_a_variance_change_scores_the_log_of_the_std_ratio(reference, ratio):
    stats, mean, std = reference
    x = np.random.default_rng(3).normal(mean, ratio * std, (1500, UNITS))
    expected = abs(math.log(ratio)) + _mean_noise(ratio)  # the mean term never reads exactly 0
    assert _stream(_statistic(stats), x)[0] == pytest.approx(expected, abs=0.05)


def test_a_bn_output_tap_is_compared_with_beta_and_the_normalized_variance():
    gamma, beta, var = [2.0] * UNITS, [0.5] * UNITS, [4.0] * UNITS
    stats = _stats([10.0] * UNITS, var, gamma, beta)
    ref = unit_reference(stats, Tap("0", "tap.0", BN_OUTPUT), 0.01)
    v0 = 4.0 * 4.0 / (4.0 + 1e-5)
    assert ref.center == pytest.approx(0.5) and ref.var == pytest.approx(v0)
    y = np.random.default_rng(4).normal(0.5 + math.sqrt(v0), math.sqrt(v0), (1500, UNITS))
    assert _stream(_statistic(stats, BN_OUTPUT), y)[0] == pytest.approx(1.0, abs=0.1)


def test_constant_units_go_to_the_sentinel_which_sees_a_mean_move():
    var = [0.0, 1e-6, *([1.0] * 98)]  # two units with no training variance
    statistic = _statistic(_stats([0.0] * 100, var))
    assert statistic.names == ("0", "0/sentinel")
    assert statistic.refs[0].excluded.tolist() == [0, 1]
    rng = np.random.default_rng(5)
    clean = rng.normal(0, 1, (500, 100))
    clean[:, :2] = 0.0
    quiet = _stream(statistic, clean)
    assert quiet[1] == 0.0 and quiet[0] < 0.2  # the excluded units do not blow up the layer
    moved = clean.copy()
    moved[:, 0] = 0.05  # a constant unit now sits at 0.05: its scale is sqrt(0.01 * 1.0) = 0.1
    scores = _stream(statistic, moved)
    assert scores[1] == pytest.approx(0.5 * (1 - 0.5 ** (500 / HALF_LIFE)), rel=1e-6)
    assert scores[0] == pytest.approx(quiet[0])


def test_winsorizing_bounds_what_one_odd_example_does(reference):
    stats, mean, std = reference
    x = np.random.default_rng(8).normal(mean, std, (400, UNITS))
    odd = x.copy()
    odd[-50] = mean + 1000 * std  # one example 1000 stds off in every unit
    plain, clipped = _statistic(stats), _statistic(stats, clip=5.0)
    assert _stream(plain, odd)[0] > 2.0  # one example alone alarms an unclipped monitor
    base, hit = _stream(clipped, x)[0], _stream(clipped, odd)[0]
    a = clipped.decay
    bound = 5.0 * (1 - a) + 0.5 * math.log(1 + 25 * (1 - a))  # its mean and variance terms
    assert base < hit < base + bound
    shifted = np.random.default_rng(9).normal(mean + 2 * std, std, (1500, UNITS))
    assert _stream(clipped, shifted)[0] == pytest.approx(2.0, abs=0.1)  # a shift is unclipped


def test_the_prior_signal_is_the_jensen_shannon_divergence_of_predicted_classes(reference):
    stats, mean, std = reference
    x = np.random.default_rng(6).normal(mean, std, (2000, UNITS))
    balanced = _stream(_statistic(stats), x, np.arange(2000) % 10)
    assert balanced[-1] < 0.01
    one_class = _stream(_statistic(stats), x, np.zeros(2000, int))
    expected = js_bits([1.0] + [0.0] * 9, [0.1] * 10)
    assert expected == pytest.approx(0.758, abs=1e-3)
    assert one_class[-1] == pytest.approx(expected, abs=1e-3)


def test_lazy_decay_equals_the_plain_exponential_average_across_rescales():
    statistic = _statistic(_stats([0.0] * 3, [1.0] * 3))
    running = statistic.new_state()
    rng = np.random.default_rng(7)
    plain, hist = np.array([0.0, 0.0, 0.0, 1.0, 1.0, 1.0]), np.full(10, 0.1)
    a = statistic.decay
    for step in range(40_000):  # far past the first rescale (weights grow 2x per half-life)
        count = 1 if step % 3 else 4  # batches too
        rows, labels = rng.normal(size=(count, 6)), rng.integers(0, 10, count)
        running.add(rows, labels)
        for row, label in zip(rows, labels, strict=True):
            plain = a * plain + (1 - a) * row
            hist = a * hist
            hist[label] += 1 - a
    state, counts = running.values()
    np.testing.assert_allclose(state, plain, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(counts, hist, rtol=1e-9)
