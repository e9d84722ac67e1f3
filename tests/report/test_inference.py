"""Equivalence, Holm, power, the seeds-and-test-set bootstrap, the sign-flip test, time to accuracy
and log-scale intervals, each recomputed independently with scipy (or by hand) from per-seed data."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import stats as sp

from stages.report import power, resampling, stats, time_to_accuracy
from stages.report.inputs import Curve


# ---------------------------------------------------------------- TOST
def tost_by_hand(differences, margin):
    """Equivalence at 5% <=> the 90% t interval lies inside (-margin, margin); p from the two t statistics."""
    d = np.asarray(differences)
    n, mean, se = d.size, d.mean(), sp.sem(d)
    p_low = sp.t.sf((mean + margin) / se, n - 1)
    p_high = sp.t.cdf((mean - margin) / se, n - 1)
    low, high = sp.t.interval(0.90, n - 1, loc=mean, scale=se)
    return max(p_low, p_high), (-margin < low and high < margin)


@pytest.mark.parametrize(("differences", "expected"), [
    ([0.0002, -0.0001, 0.0001, 0.0000], "equivalent"),  # tight around 0: inside +-0.1 pp
    ([0.010, 0.011, 0.012], "different"),  # consistently +1 pp: far outside the margin
    ([0.001, -0.002, 0.0025], "inconclusive"),  # spread as large as the margin: neither
])
def test_tost_matches_the_two_one_sided_t_tests_and_the_90_percent_interval(differences, expected):
    margin = 0.001
    result = stats.tost(differences, margin)
    p_value, inside = tost_by_hand(differences, margin)
    assert result.p_value == pytest.approx(p_value, rel=1e-9)
    assert result.equivalent == inside == (expected == "equivalent")
    p_value = stats.paired_difference(differences, [0.0] * len(differences)).p_value
    assert p_value is not None and (p_value < 0.05) == (expected == "different")


def test_tost_of_one_seed_is_not_computed_and_constant_differences_decide_by_the_margin():
    assert stats.tost([0.001], 0.01) is None
    assert stats.tost([0.001, 0.001], 0.01).equivalent
    assert not stats.tost([0.02, 0.02], 0.01).equivalent


# ---------------------------------------------------------------- Holm
def test_holm_on_a_hand_worked_example():
    # sorted: 0.005 x 4 = 0.02; 0.01 x 3 = 0.03; 0.03 x 2 = 0.06; 0.04 x 1 = 0.04 -> kept at 0.06 (monotone)
    assert stats.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert stats.holm([None, 0.5, 0.4]) == [None, 0.8, 0.8]  # two tests in the family; capped order kept
    assert stats.holm([0.9, 0.8]) == [1.0, 1.0]  # capped at 1


# ---------------------------------------------------------------- power
def test_power_is_the_noncentral_t_and_matches_a_simulation():
    sd, n, delta = 1.0, 4, 1.5
    simulated = np.random.default_rng(0).normal(delta, sd, size=(40_000, n))
    rejected = np.mean(sp.ttest_1samp(simulated, 0.0, axis=1).pvalue < 0.05)
    assert power.power(delta, sd, n) == pytest.approx(rejected, abs=0.01)


def test_minimum_detectable_difference_has_80_percent_power_and_the_issue_numbers_follow():
    sd = 0.0003
    detectable = power.minimum_detectable(sd, 3)
    df, noncentrality = 2, detectable * math.sqrt(3) / sd
    critical = sp.t.ppf(0.975, df)
    assert sp.nct.sf(critical, df, noncentrality) + sp.nct.cdf(-critical, df, noncentrality) == pytest.approx(0.8)
    # With three seeds and an MDD of 0.10 pp, half of it (0.05 pp) has 36% power and needs 6 seeds (issue 22).
    assert power.power(detectable / 2, sd, 3) == pytest.approx(0.36, abs=0.005)
    assert power.seeds_needed(detectable / 2, sd) == 6
    assert power.power(detectable / 2, sd, 5) < 0.8 <= power.power(detectable / 2, sd, 6)


def test_the_test_set_floor_is_the_standard_error_of_the_seed_averaged_per_image_difference():
    rng = np.random.default_rng(1)
    first, second = ((rng.random((3, 500)) < p).astype(float) for p in (0.95, 0.96))
    floor = power.test_set_floor(first, second)
    assert floor.standard_error == pytest.approx(sp.sem((first - second).mean(axis=0)))
    assert floor.detectable == pytest.approx((sp.norm.ppf(0.975) + sp.norm.ppf(0.8)) * floor.standard_error)


# ---------------------------------------------------------------- resampling
def synthetic_arms(seeds=4, images=2000, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, images)

    def arm(accuracy):
        probabilities = []
        for _ in range(seeds):
            predicted = np.where(rng.random(images) < accuracy, labels, (labels + 1) % 10)
            p = np.full((images, 10), 0.02, np.float32)
            p[np.arange(images), predicted] = 0.82
            probabilities.append(p)
        return resampling.arm_images(probabilities, labels)
    return arm(0.95), arm(0.93), labels


def test_the_two_level_bootstrap_covers_seeds_and_test_images():
    first, second, labels = synthetic_arms()
    interval = resampling.two_level_bootstrap("test_accuracy", first, second, labels)
    correct = [(arm.predicted == labels).astype(float) for arm in (first, second)]
    differences = correct[0] - correct[1]  # seeds x images
    per_seed = differences.mean(axis=1)
    n, images = differences.shape
    seeds_part = np.var(per_seed) / n  # resampling n seeds with replacement: the plug-in variance over n
    # Images, given the resampled seed weights w = counts / n (counts multinomial): Var = E[w' C w] / images,
    # with E[c_s^2] = 2 - 1/n and E[c_s c_t] = 1 - 1/n.
    weights = (np.full((n, n), 1 - 1 / n) + np.eye(n)) / n**2
    images_part = float(np.sum(weights * np.cov(differences))) / images
    expected = sp.norm.ppf(0.975) * math.sqrt(seeds_part + images_part)
    assert (interval.high - interval.low) / 2 == pytest.approx(expected, rel=0.15)
    assert interval.low < per_seed.mean() < interval.high
    # Not the seeds-only t interval: the test images are resampled too.
    seeds_only = stats.paired_difference(*(list(values.mean(axis=1)) for values in correct)).ci
    assert (interval.high - interval.low) > 0 and interval != seeds_only


def test_the_bootstrap_of_identical_arms_is_zero_and_it_is_reproducible():
    first, _, labels = synthetic_arms(seeds=2, images=300)
    for metric in ("test_accuracy", "test_loss", "macro_f1"):
        interval = resampling.two_level_bootstrap(metric, first, first, labels, resamples=200)
        assert (interval.low, interval.high) == (0.0, 0.0)
    _, second, _ = synthetic_arms(seeds=2, images=300)
    once = resampling.two_level_bootstrap("macro_f1", first, second, labels, resamples=200)
    assert resampling.two_level_bootstrap("macro_f1", first, second, labels, resamples=200) == once


def test_macro_f1_of_the_resampler_matches_the_evaluation():
    from stages.common import metrics
    first, _, labels = synthetic_arms(seeds=2, images=300)
    statistic = resampling.difference_statistic("macro_f1", first, resampling.ArmImages(
        np.zeros_like(first.predicted), first.loss), labels)
    everything = statistic(np.array([[0, 1]]), np.arange(labels.size)[None, :])
    expected = np.mean([metrics.per_class_scores(metrics.confusion_matrix(labels, row, 10))["f1"].mean()
                        for row in first.predicted])
    zero = metrics.per_class_scores(metrics.confusion_matrix(labels, np.zeros_like(labels), 10))["f1"].mean()
    assert everything[0] == pytest.approx(expected - zero)


def test_sign_flip_is_the_exact_test_over_images_of_the_seed_averaged_difference():
    labels = np.zeros(8, np.int64)
    right = np.zeros((2, 8), np.int64)
    wrong = np.ones((2, 8), np.int64)
    # seed 0 and 1: first right on images 0-4, second right on image 5 in seed 0 only.
    first_predicted = np.where(np.arange(8) < 5, right, wrong)
    second_predicted = wrong.copy()
    second_predicted[0, 5] = 0
    arms = [resampling.ArmImages(p, np.zeros(p.shape)) for p in (first_predicted, second_predicted)]
    d = ((first_predicted == 0).astype(float) - (second_predicted == 0)).mean(axis=0)
    nonzero = d[d != 0]
    observed = abs(nonzero.sum())
    flips = [abs(np.dot(signs, nonzero)) for signs in itertools.product((-1, 1), repeat=nonzero.size)]
    expected = np.mean(np.array(flips) >= observed - 1e-12)
    assert resampling.sign_flip("test_accuracy", *arms, labels) == pytest.approx(expected)
    assert resampling.sign_flip("test_accuracy", arms[0], arms[0], labels) == 1.0


# ---------------------------------------------------------------- time to accuracy, censoring
def curve(values):
    return Curve(np.arange(1, len(values) + 1), np.asarray(values, float))


def test_time_to_target_is_the_cumulative_seconds_to_the_first_epoch_at_the_target():
    hit = time_to_accuracy.reached(curve([0.97, 0.991, 0.985, 0.995]), curve([10.0, 8.0, 8.0, 8.0]), 0.99)
    assert (hit.seconds, hit.epochs, hit.censored) == (18.0, 2, False)
    miss = time_to_accuracy.reached(curve([0.97, 0.98]), curve([10.0, 8.0]), 0.99)
    assert (miss.seconds, miss.epochs, miss.censored) == (18.0, 2, True)
    assert miss.text() == "not reached in 2 epochs (> 18.0 s)"


def test_a_censored_replicate_makes_the_ratio_not_estimable_and_is_shown_with_its_bound():
    reached = time_to_accuracy.Reached
    first = [reached(20.0, 2, False), reached(30.0, 3, True), reached(22.0, 2, False)]
    second = [reached(10.0, 1, False), reached(15.0, 2, False), reached(11.0, 1, False)]
    result = time_to_accuracy.compare(first, second, 0.99)
    assert result.seconds is None and result.epochs is None and result.censored == 1
    assert result.bounds == ("2.00", "> 2.00", "2.00")
    text = time_to_accuracy.sentence(result, "Keras", "PyTorch", 3)
    assert "not estimable, 1 of 6 replicates never reached it" in text and "> 2.00" in text
    assert time_to_accuracy.compare(second, first, 0.99).bounds[1] == "< 0.50"


def test_time_to_target_of_replicates_that_all_reach_it_is_a_paired_ratio():
    reached = time_to_accuracy.Reached
    first = [reached(20.0, 2, False), reached(24.0, 3, False), reached(22.0, 2, False)]
    second = [reached(10.0, 2, False), reached(11.0, 2, False), reached(12.0, 2, False)]
    result = time_to_accuracy.compare(first, second, 0.99)
    logs = np.log([2.0, 24 / 11, 22 / 12])
    assert result.seconds.estimate == pytest.approx(math.exp(logs.mean()))
    low, high = sp.t.interval(0.95, 2, loc=logs.mean(), scale=sp.sem(logs))
    assert (result.seconds.ci.low, result.seconds.ci.high) == pytest.approx((math.exp(low), math.exp(high)))


# ---------------------------------------------------------------- log-scale intervals
def test_log_scale_intervals_of_a_spread_out_time_stay_positive():
    values = [60.0, 120.0, 580.0]  # on a busy machine: the arithmetic t interval goes below zero
    arithmetic = stats.over_seeds(values)
    assert arithmetic.ci.low < 0
    spread = stats.over_seeds_log(values)
    logs = np.log(values)
    low, high = sp.t.interval(0.95, 2, loc=logs.mean(), scale=sp.sem(logs))
    assert spread.log_scale and 0 < spread.ci.low < spread.mean < spread.ci.high
    assert (spread.ci.low, spread.ci.high) == pytest.approx((math.exp(low), math.exp(high)))
    assert spread.mean == pytest.approx(sp.gmean(values))
    assert spread.sd == pytest.approx(math.exp(np.std(logs, ddof=1)))
    with pytest.raises(ValueError, match="positive"):
        stats.over_seeds_log([1.0, 0.0])


# ---------------------------------------------------------------- equivalence on seeds and test images
def test_equivalence_on_the_bootstrap_is_its_90_percent_interval_and_its_tail_shares():
    first, second, labels = synthetic_arms(seeds=3, images=1500, seed=3)
    distribution = resampling.two_level_distribution("test_accuracy", first, second, labels, resamples=400)
    assert distribution.shape == (400,)
    # the same draws as scipy's percentile interval at 95% (the reported one) ...
    assert resampling.two_level_bootstrap("test_accuracy", first, second, labels, resamples=400) == \
        resampling.percentile_interval(distribution)
    for margin in (0.01, 0.02, 0.03, 0.05):
        result = resampling.equivalence(distribution, margin)
        low, high = np.percentile(distribution, [5, 95])
        assert (result.interval.low, result.interval.high) == pytest.approx((low, high), rel=1e-12, abs=1e-15)
        below, above = np.sum(distribution <= -margin), np.sum(distribution >= margin)
        assert result.p_value == pytest.approx((1 + max(below, above)) / 401)
        assert result.inside == (-margin < low and high < margin)
        if result.p_value < 0.05:  # a bootstrap TOST below 5% implies the 90% interval inside the margin
            assert result.inside


def test_the_smallest_bootstrap_tost_p_is_one_over_resamples_plus_one():
    result = resampling.equivalence(np.zeros(999), 0.001)
    assert result.p_value == pytest.approx(1 / 1000) and result.inside
    assert resampling.equivalence(np.full(999, 0.002), 0.001).p_value == 1.0


def test_the_test_set_error_is_the_jackknife_over_images():
    first, second, labels = synthetic_arms(seeds=2, images=120, seed=5)
    # a mean over images: the jackknife standard error is the standard error of the mean
    per_image = ((first.predicted == labels).astype(float) - (second.predicted == labels)).mean(axis=0)
    assert resampling.test_set_error("test_accuracy", first, second, labels) == pytest.approx(sp.sem(per_image))
    # macro F1: leave each image out, recompute every seed's F1 with the evaluation's own scores
    from stages.common import metrics

    def f1(predicted, truth):
        return metrics.per_class_scores(metrics.confusion_matrix(truth, predicted, 10))["f1"].mean()
    left_out = []
    for image in range(labels.size):
        keep = np.arange(labels.size) != image
        left_out.append(np.mean([f1(a[keep], labels[keep]) - f1(b[keep], labels[keep])
                                 for a, b in zip(first.predicted, second.predicted)]))
    left_out = np.array(left_out)
    expected = math.sqrt((labels.size - 1) / labels.size * np.sum((left_out - left_out.mean()) ** 2))
    assert resampling.test_set_error("macro_f1", first, second, labels) == pytest.approx(expected)
    assert power.resolution(0.0034) == pytest.approx(sp.norm.ppf(0.95) * 0.0034)


# ---------------------------------------------------------------- seeds for a verdict
@pytest.mark.parametrize(("delta", "sd", "n", "margin"), [(0.0, 1.0, 5, 1.5), (0.3, 1.0, 10, 1.0),
                                                          (0.2, 1.0, 3, 2.0)])
def test_tost_power_matches_a_simulation_of_the_two_one_sided_t_tests(delta, sd, n, margin):
    simulated = np.random.default_rng(7).normal(delta, sd, size=(40_000, n))
    above = sp.ttest_1samp(simulated, -margin, axis=1, alternative="greater").pvalue
    below = sp.ttest_1samp(simulated, margin, axis=1, alternative="less").pvalue
    shown = np.mean(np.maximum(above, below) < 0.05)
    assert power.tost_power(delta, sd, n, margin) == pytest.approx(shown, abs=0.01)


def test_the_sd_interval_is_the_chi_square_interval():
    low, high = power.sd_interval(0.0007, 3)
    # var * df / s^2 ~ chi2(df): the 95% interval of sigma from the 2.5% and 97.5% quantiles
    assert sp.chi2.cdf(2 * 0.0007**2 / low**2, 2) == pytest.approx(0.975)
    assert sp.chi2.cdf(2 * 0.0007**2 / high**2, 2) == pytest.approx(0.025)
    assert low < 0.0007 < high


def test_seeds_for_a_verdict_are_sought_by_the_right_power_over_the_sd_range():
    sd, n, margin = 0.0007, 3, 0.001
    equivalence = power.seeds_for_verdict(0.0003, sd, n, margin)
    assert equivalence.verdict == "equivalence"
    low_sd, high_sd = power.sd_interval(sd, n)
    for seeds, spread in ((equivalence.seeds, sd), (equivalence.low, low_sd), (equivalence.high, high_sd)):
        assert power.tost_power(0.0003, spread, seeds, margin) >= 0.8 > power.tost_power(0.0003, spread, seeds - 1,
                                                                                          margin)
    assert equivalence.low <= equivalence.seeds <= equivalence.high
    difference = power.seeds_for_verdict(0.0015, sd, n, margin)  # outside the margin: detect it
    assert difference.verdict == "difference"
    linear = next(count for count in range(2, 1000) if power.power(0.0015, sd, count) >= 0.8)
    assert difference.seeds == linear
    assert power.seeds_for_verdict(0.0, 0.0, 3, margin) is None and power.seeds_for_verdict(0.0, sd, 1, margin) is None
    assert power.seeds_for_verdict(0.0015, 1.0, 3, margin).high is None  # beyond MAX_SEEDS
