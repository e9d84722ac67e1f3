"""What the seeds and the test set can detect: power of the paired t-test across seeds (from the
noncentral t distribution, ``scipy.stats.nct``) and the floor that the test set's size sets.

- ``power(delta, sd, n)``: the chance that a two-sided paired t-test at the 5% level over ``n``
  seeds finds a true mean difference ``delta`` when the per-seed differences have standard
  deviation ``sd``;
- ``minimum_detectable(sd, n)``: the ``delta`` with 80% power;
- ``seeds_needed(delta, sd)``: the fewest seeds with 80% power for ``delta``;
- ``tost_power(delta, sd, n, margin)``: the chance that the two one-sided t-tests at 5% over
  ``n`` seeds show equivalence within ``margin`` when the true mean difference is ``delta``:
  exact, as the expectation over the sample variance (``scipy.stats.chi2.expect``) of the
  normal probability that the 90% t interval lies inside the margin;
- ``seeds_for_verdict(estimate, sd, n, margin)``: the seeds the verdict within reach needs
  (equivalence when the estimate lies inside the margin, detection of a difference otherwise),
  at the observed standard deviation and at both ends of its 95% chi-square interval
  (``sd_interval``): with few seeds the spread itself is uncertain, so the answer is a range;
- ``test_set_floor(per_image)``: the test-set sampling standard error of the seed-averaged
  difference, and the difference it lets any number of seeds detect at 80% power (normal
  approximation: (z(0.975) + z(0.80)) x SE). More seeds average out training randomness, not
  the particular test images every seed is scored on. ``resolution(standard_error)``: the
  half-width of the 90% interval the test set alone leaves, however many seeds: equivalence
  within a margin smaller than the estimate plus this cannot be shown on this test set.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import optimize, stats

ALPHA = 0.05
TARGET_POWER = 0.80
MAX_SEEDS = 1000


def power(delta: float, sd: float, n: int, alpha: float = ALPHA) -> float:
    """Power of the two-sided paired t-test (n seeds, df n - 1) for a true mean difference delta."""
    if n < 2:
        raise ValueError("power of a paired t-test needs at least two seeds")
    if sd <= 0:
        return 1.0 if delta != 0 else alpha
    df = n - 1
    noncentrality = abs(delta) * math.sqrt(n) / sd
    critical = stats.t.ppf(1 - alpha / 2, df)
    upper = float(stats.nct.sf(critical, df, noncentrality))
    lower = float(stats.nct.cdf(-critical, df, noncentrality))  # the wrong-sign rejections: negligible far out
    if not math.isfinite(upper):  # deep in a tail, where nct's numerics give NaN
        upper = 1.0 if noncentrality > critical else 0.0
    return upper + (lower if math.isfinite(lower) else 0.0)


def minimum_detectable(sd: float, n: int, target: float = TARGET_POWER) -> float:
    """The smallest true difference the paired t-test over n seeds finds with ``target`` power."""
    if n < 2:
        raise ValueError("a minimum detectable difference needs at least two seeds")
    if sd <= 0:
        return 0.0
    high = sd
    while power(high, sd, n) < target:
        high *= 2
    return float(optimize.brentq(lambda delta: power(delta, sd, n) - target, 0.0, high, xtol=1e-12 * high))


def fewest_seeds(power_at: Callable[[int], float], target: float = TARGET_POWER) -> int | None:
    """The fewest seeds n in [2, MAX_SEEDS] with ``power_at(n) >= target`` (power grows with n:
    bisection); None beyond ``MAX_SEEDS``."""
    if power_at(MAX_SEEDS) < target:
        return None
    low, high = 1, MAX_SEEDS  # power_at(high) >= target; low is below every candidate
    while high - low > 1:
        middle = (low + high) // 2
        if middle >= 2 and power_at(middle) >= target:
            high = middle
        else:
            low = middle
    return high


def seeds_needed(delta: float, sd: float, target: float = TARGET_POWER) -> int | None:
    """The fewest seeds (>= 2) whose paired t-test finds ``delta`` with ``target`` power; None
    beyond ``MAX_SEEDS``."""
    if delta == 0:
        return None
    return fewest_seeds(lambda n: power(delta, sd, n), target)


def tost_power(delta: float, sd: float, n: int, margin: float, alpha: float = ALPHA) -> float:
    """Power of TOST at level ``alpha`` over n seeds (paired, df n - 1): the probability that the
    (1 - 2 alpha) t interval of the mean difference lies inside (-margin, margin)."""
    if n < 2:
        raise ValueError("power of TOST needs at least two seeds")
    if sd <= 0:
        return 1.0 if abs(delta) < margin else 0.0
    df = n - 1
    error = sd / math.sqrt(n)
    critical = float(stats.t.ppf(1 - alpha, df))

    def inside(variance_ratio: float) -> float:  # given the sample variance s^2 = sd^2 * chi2 / df
        half = critical * error * math.sqrt(variance_ratio / df)
        if half >= margin:
            return 0.0
        return float(stats.norm.cdf((margin - half - delta) / error) - stats.norm.cdf((-margin + half - delta) / error))

    # beyond this chi-square value the interval is wider than the margin: the integrand is zero there
    upper = df * (margin / (critical * error)) ** 2
    return float(stats.chi2.expect(inside, args=(df,), lb=0.0, ub=upper))


def sd_interval(sd: float, n: int, level: float = 0.95) -> tuple[float, float]:
    """The ``level`` chi-square confidence interval of a normal standard deviation estimated as
    ``sd`` from n values."""
    df = n - 1
    tail = (1 - level) / 2
    return (sd * math.sqrt(df / stats.chi2.ppf(1 - tail, df)), sd * math.sqrt(df / stats.chi2.ppf(tail, df)))


@dataclass(frozen=True)
class SeedsForVerdict:
    """The seeds a verdict needs at 80% power, if the true difference is the estimate."""

    verdict: Literal["equivalence", "difference"]  # the verdict sought
    seeds: int | None  # at the observed standard deviation; None beyond MAX_SEEDS
    low: int | None  # at the lower end of the standard deviation's 95% interval
    high: int | None  # at its upper end; None beyond MAX_SEEDS


def seeds_for_verdict(estimate: float, sd: float, n: int, margin: float) -> SeedsForVerdict | None:
    """Seeds for the verdict within reach: equivalence (TOST power) when |estimate| < margin,
    a difference (paired t-test power for a true difference of ``estimate``) otherwise. None for
    one seed or no spread."""
    if n < 2 or sd <= 0:
        return None
    low_sd, high_sd = sd_interval(sd, n)
    if abs(estimate) < margin:
        def needed(spread: float) -> int | None:
            return fewest_seeds(lambda count: tost_power(estimate, spread, count, margin))
        verdict: Literal["equivalence", "difference"] = "equivalence"
    else:
        def needed(spread: float) -> int | None:
            return seeds_needed(estimate, spread)
        verdict = "difference"
    return SeedsForVerdict(verdict, needed(sd), needed(low_sd), needed(high_sd))


def resolution(standard_error: float, alpha: float = ALPHA) -> float:
    """Half-width of the (1 - 2 alpha) normal interval that a test-set standard error leaves."""
    return float(stats.norm.ppf(1 - alpha) * standard_error)


@dataclass(frozen=True)
class Floor:
    standard_error: float  # test-set sampling SE of the seed-averaged difference
    detectable: float  # smallest difference detectable at 80% power, however many seeds


def test_set_floor(first: np.ndarray, second: np.ndarray) -> Floor:
    """``first``/``second``: per-seed, per-image values (seeds x images) whose mean over images is
    the metric (1/0 correct for accuracy, the log loss for cross-entropy)."""
    per_image = (np.asarray(first, np.float64) - np.asarray(second, np.float64)).mean(axis=0)
    standard_error = float(per_image.std(ddof=1) / math.sqrt(per_image.size))
    z = stats.norm.ppf(1 - ALPHA / 2) + stats.norm.ppf(TARGET_POWER)
    return Floor(standard_error, float(z * standard_error))


test_set_floor.__test__ = False  # type: ignore[attr-defined]  # not a pytest test
