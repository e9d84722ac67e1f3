"""stages/report/stats.py against published reference values and the edge cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from stages.report import stats

# Student's sleep data (R: t.test(extra ~ group, data = sleep, paired = TRUE)): t = -4.0621,
# df = 9, p-value = 0.002833, 95% CI -2.4598858 -0.7001142, mean difference -1.58.
SLEEP_1 = [0.7, -1.6, -0.2, -1.2, -0.1, 3.4, 3.7, 0.8, 0.0, 2.0]
SLEEP_2 = [1.9, 0.8, 1.1, 0.1, -0.1, 4.4, 5.5, 1.6, 4.6, 3.4]


def test_paired_difference_matches_r_on_the_sleep_data():
    result = stats.paired_difference(SLEEP_1, SLEEP_2)
    assert result.estimate == pytest.approx(-1.58)
    assert result.ci.low == pytest.approx(-2.4598858, abs=1e-6)
    assert result.ci.high == pytest.approx(-0.7001142, abs=1e-6)
    assert result.p_value == pytest.approx(0.002833, abs=1e-6)
    assert result.p_value < 0.05


def test_mean_interval_is_the_t_interval():
    # mean 3, sd 1.5811, t(0.975, 4) = 2.776445: half-width 1.963243
    spread = stats.over_seeds([1, 2, 3, 4, 5])
    assert spread.mean == 3.0 and spread.sd == pytest.approx(math.sqrt(2.5))
    assert (spread.ci.low, spread.ci.high) == pytest.approx((3 - 1.963243, 3 + 1.963243), abs=1e-6)


def test_one_seed_has_no_interval():
    assert stats.over_seeds([0.99]) == stats.Spread((0.99,), 0.99, None, None)
    paired = stats.paired_difference([0.99], [0.98])
    assert paired.ci is None and paired.p_value is None
    assert paired.estimate == pytest.approx(0.01)


def test_identical_runs_give_a_zero_width_interval_and_no_significance():
    result = stats.paired_difference([0.99, 0.98, 0.97], [0.99, 0.98, 0.97])
    assert (result.estimate, result.ci.low, result.ci.high, result.p_value) == (0.0, 0.0, 0.0, 1.0)
    spread = stats.over_seeds([5.0, 5.0])
    assert (spread.sd, spread.ci.low, spread.ci.high) == (0.0, 5.0, 5.0)


def test_a_constant_nonzero_difference_is_significant():
    result = stats.paired_difference([2.0, 3.0, 4.0], [1.0, 2.0, 3.0])
    assert result.ci.low == result.ci.high == 1.0 and result.p_value == 0.0


def test_paired_ratio_is_the_geometric_mean_with_a_log_t_interval():
    result = stats.paired_ratio([20.0, 22.0, 21.0], [10.0, 10.0, 10.0])
    logs = np.log([2.0, 2.2, 2.1])
    assert result.estimate == pytest.approx(math.exp(logs.mean()))
    half = 4.302653 * logs.std(ddof=1) / math.sqrt(3)  # t(0.975, 2)
    assert (result.ci.low, result.ci.high) == pytest.approx((math.exp(logs.mean() - half),
                                                             math.exp(logs.mean() + half)), rel=1e-6)
    assert result.per_seed == pytest.approx((2.0, 2.2, 2.1))
    with pytest.raises(ValueError, match="positive"):
        stats.paired_ratio([1.0, 0.0], [1.0, 1.0])


def test_paired_values_must_pair_up():
    with pytest.raises(ValueError, match="equal"):
        stats.paired_difference([1.0, 2.0], [1.0])


@pytest.mark.parametrize(("only_first", "only_second", "expected"), [
    (18, 23, 0.5327092552361137),  # the committed single-seed run's 41 disagreements
    (0, 6, 2 * 0.5 ** 6),
    (1, 9, 2 * 11 / 1024),  # 2 * P(X <= 1), X ~ Binomial(10, 1/2)
    (0, 0, 1.0),  # no discordant pairs: nothing to test
])
def test_exact_mcnemar_against_the_binomial_distribution(only_first, only_second, expected):
    both = np.ones(50, bool)
    first = np.concatenate([np.ones(only_first, bool), np.zeros(only_second, bool), both])
    second = np.concatenate([np.zeros(only_first, bool), np.ones(only_second, bool), both])
    result = stats.mcnemar(first, second)
    assert (result.only_first_right, result.only_second_right) == (only_first, only_second)
    assert result.p_value == pytest.approx(expected, rel=1e-9)


def test_wilson_interval_matches_its_closed_form_and_stays_in_0_1():
    z = 1.959963984540054
    for correct, total in ((9931, 10000), (81, 263), (0, 20), (20, 20)):
        p = correct / total
        centre = (p + z * z / (2 * total)) / (1 + z * z / total)
        half = z / (1 + z * z / total) * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total))
        interval = stats.wilson(correct, total)
        assert (interval.low, interval.high) == pytest.approx((centre - half, centre + half), abs=1e-9)
        assert 0.0 <= interval.low <= p <= interval.high <= 1.0


def test_differences_equal_up_to_rounding_count_as_identical():
    # 0.3 - 0.1 and 0.2 - 0.0 differ in the last bit; a t-test on that "spread" would claim certainty.
    result = stats.paired_difference([0.3, 0.2, 0.5], [0.1, 0.0, 0.3])
    assert result.ci.low == pytest.approx(0.2) and result.ci.high == pytest.approx(0.2)
    zero = stats.paired_difference([0.3, 0.7], [0.1 + 0.2, 0.7])
    assert zero.p_value == 1.0


def test_spreads_and_pairs_keep_their_per_seed_values():
    assert stats.over_seeds([3.0, 1.0, 2.0]).values == (3.0, 1.0, 2.0)
    assert stats.paired_difference([3.0, 1.0], [1.0, 2.0]).per_seed == (2.0, -1.0)
    with pytest.raises(ValueError, match="no values"):
        stats.over_seeds([])


def test_paired_ratio_p_value_is_the_paired_t_test_on_log_ratios():
    first, second = [20.0, 23.0, 21.0, 25.0], [10.0, 10.5, 11.0, 10.2]
    expected = stats.paired_difference(np.log(first).tolist(), np.log(second).tolist()).p_value
    assert stats.paired_ratio(first, second).p_value == pytest.approx(expected)
    assert 0 < expected < 0.05


def test_paired_ratio_of_one_seed_has_no_interval():
    result = stats.paired_ratio([20.0], [10.0])
    assert result.estimate == pytest.approx(2.0) and result.ci is None and result.p_value is None


@pytest.mark.parametrize("second", [[1.0, 0.0], [1.0, -2.0]])
def test_paired_ratio_refuses_a_non_positive_second_value(second):
    with pytest.raises(ValueError, match="ratios need positive values"):
        stats.paired_ratio([1.0, 2.0], second)


def test_the_tie_threshold_is_relative_to_the_size_of_the_values():
    # Values of order 1e6 that differ by 1e-4 still have a real spread: a t interval, not a point.
    spread = stats.over_seeds([1e6, 1e6 + 1e-4, 1e6 + 2e-4])
    assert spread.ci.high - spread.ci.low > 0
    # A spread of exactly the threshold at scale 1 counts as a tie; twice of it does not.
    tie = stats.paired_difference([1.0 + 1e-12, 1.0], [1.0, 1.0])
    assert tie.ci.low == tie.ci.high
    spread_of_two = stats.paired_difference([1.0 + 4e-12, 1.0], [1.0, 1.0])
    assert spread_of_two.ci.low < spread_of_two.ci.high
