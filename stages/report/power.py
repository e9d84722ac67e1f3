"""What the seeds and the test set can detect: power of the paired t-test across seeds (from the
noncentral t distribution, ``scipy.stats.nct``) and the floor that the test set's size sets.

- ``power(delta, sd, n)``: the chance that a two-sided paired t-test at the 5% level over ``n``
  seeds finds a true mean difference ``delta`` when the per-seed differences have standard
  deviation ``sd``;
- ``minimum_detectable(sd, n)``: the ``delta`` with 80% power;
- ``seeds_needed(delta, sd)``: the fewest seeds with 80% power for ``delta``;
- ``test_set_floor(per_image)``: the test-set sampling standard error of the seed-averaged
  difference, and the difference it lets any number of seeds detect at 80% power (normal
  approximation: (z(0.975) + z(0.80)) x SE). More seeds average out training randomness, not
  the particular test images every seed is scored on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

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


def seeds_needed(delta: float, sd: float, target: float = TARGET_POWER) -> int | None:
    """The fewest seeds (>= 2) whose paired t-test finds ``delta`` with ``target`` power; None
    beyond ``MAX_SEEDS``."""
    if delta == 0:
        return None
    for n in range(2, MAX_SEEDS + 1):
        if power(delta, sd, n) >= target:
            return n
    return None


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
