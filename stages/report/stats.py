"""The statistics of a comparison, on top of ``scipy.stats`` (no hand-written distributions).

Two kinds of variation, each with its own intervals:

- training randomness, across replicate seeds (initialisation, batch order, dropout): t-based
  95% confidence intervals of a mean (``over_seeds``; ``over_seeds_log`` for positive
  quantities such as times, throughputs and latencies: a t interval on the logs, so the bounds
  stay positive), of a paired difference between two arms trained from the same seeds
  (``paired_difference``, with a paired t-test), and of a ratio of speeds (``paired_ratio``: a t
  interval on log ratios, i.e. a geometric mean); the two one-sided tests of equivalence within
  a margin (``tost``) on the same per-seed differences;
- sampling of the test set, for one trained model: the Wilson interval of its accuracy
  (``wilson``) and the exact McNemar test of two models' paired predictions (``mcnemar``).

``holm`` adjusts a family of p-values for multiple comparisons (Holm's step-down). The
resampling tests that cover seeds and test images together are in ``resampling.py``, power in
``power.py``.

Every function takes plain sequences and returns frozen dataclasses of floats; ``None`` marks
what cannot be computed (an interval from one seed).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

LEVEL = 0.95


@dataclass(frozen=True)
class Interval:
    low: float
    high: float


@dataclass(frozen=True)
class Spread:
    """One metric over seeds."""

    values: tuple[float, ...]
    mean: float
    sd: float | None  # sample standard deviation; None for one seed
    ci: Interval | None  # of the mean; None for one seed
    log_scale: bool = False  # mean is the geometric mean, sd the geometric sd (a factor), ci from the logs


@dataclass(frozen=True)
class Paired:
    """Framework A minus framework B (or A / B for ratios), seed by seed."""

    per_seed: tuple[float, ...]
    estimate: float  # mean difference, or geometric-mean ratio
    ci: Interval | None
    p_value: float | None  # paired t-test (on log ratios for ratios); None for one seed


@dataclass(frozen=True)
class McNemar:
    """Exact McNemar test of two models on the same test images."""

    only_first_right: int
    only_second_right: int
    p_value: float  # two-sided, exact (binomial on the discordant pairs); 1.0 when there are none


def _mean_interval(values: np.ndarray) -> tuple[Interval, float]:
    """t interval of the mean and the two-sided p-value of 'mean is 0' (values of length >= 2)."""
    mean, sd = float(values.mean()), float(values.std(ddof=1))
    if sd <= 1e-12 * max(1.0, abs(mean)):  # identical values (to rounding): no spread to test against
        return Interval(mean, mean), (1.0 if abs(mean) <= 1e-12 else 0.0)
    result = stats.ttest_1samp(values, popmean=0.0)
    interval = result.confidence_interval(confidence_level=LEVEL)
    return Interval(float(interval.low), float(interval.high)), float(result.pvalue)


def over_seeds(values: Sequence[float]) -> Spread:
    array = np.asarray(values, dtype=np.float64)
    if array.size == 0:
        raise ValueError("no values")
    if array.size == 1:
        return Spread(tuple(array.tolist()), float(array[0]), None, None)
    interval, _ = _mean_interval(array)
    return Spread(tuple(array.tolist()), float(array.mean()), float(array.std(ddof=1)), interval)


def over_seeds_log(values: Sequence[float]) -> Spread:
    """A positive quantity over seeds: geometric mean, geometric sd (a factor >= 1), and the t
    interval of the mean log, exponentiated: its bounds are positive whatever the spread."""
    array = np.asarray(values, dtype=np.float64)
    if array.size == 0:
        raise ValueError("no values")
    if np.any(array <= 0):
        raise ValueError("a log-scale interval needs positive values")
    logs = over_seeds(np.log(array).tolist())
    interval = None if logs.ci is None else Interval(math.exp(logs.ci.low), math.exp(logs.ci.high))
    return Spread(tuple(array.tolist()), math.exp(logs.mean), None if logs.sd is None else math.exp(logs.sd),
                  interval, log_scale=True)


def paired_difference(first: Sequence[float], second: Sequence[float]) -> Paired:
    a, b = np.asarray(first, dtype=np.float64), np.asarray(second, dtype=np.float64)
    if a.shape != b.shape or a.size == 0:
        raise ValueError(f"paired values need equal, non-zero lengths; got {a.size} and {b.size}")
    difference = a - b
    if difference.size == 1:
        return Paired(tuple(difference.tolist()), float(difference[0]), None, None)
    interval, p_value = _mean_interval(difference)
    return Paired(tuple(difference.tolist()), float(difference.mean()), interval, p_value)


def paired_ratio(first: Sequence[float], second: Sequence[float]) -> Paired:
    """Geometric mean of first/second over seeds, with the CI of the t interval on log ratios."""
    a, b = np.asarray(first, dtype=np.float64), np.asarray(second, dtype=np.float64)
    if np.any(a <= 0) or np.any(b <= 0):
        raise ValueError("ratios need positive values")
    logs = paired_difference(np.log(a).tolist(), np.log(b).tolist())
    ratios = tuple(math.exp(value) for value in logs.per_seed)
    interval = None if logs.ci is None else Interval(math.exp(logs.ci.low), math.exp(logs.ci.high))
    return Paired(ratios, math.exp(logs.estimate), interval, logs.p_value)


def wilson(correct: int, total: int) -> Interval:
    """Wilson score interval of one model's accuracy on ``total`` test images."""
    interval = stats.binomtest(correct, total).proportion_ci(confidence_level=LEVEL, method="wilson")
    return Interval(float(interval.low), float(interval.high))


def mcnemar(first_correct: np.ndarray, second_correct: np.ndarray) -> McNemar:
    """Exact McNemar test on two boolean 'was right' vectors over the same test images."""
    first_correct, second_correct = np.asarray(first_correct, bool), np.asarray(second_correct, bool)
    if first_correct.shape != second_correct.shape:
        raise ValueError(f"predictions over {first_correct.shape} and {second_correct.shape} images differ")
    only_first = int(np.sum(first_correct & ~second_correct))
    only_second = int(np.sum(~first_correct & second_correct))
    discordant = only_first + only_second
    p_value = 1.0 if discordant == 0 else float(stats.binomtest(only_first, discordant, 0.5).pvalue)
    return McNemar(only_first, only_second, p_value)


@dataclass(frozen=True)
class Tost:
    """Two one-sided paired t-tests of |mean difference| < margin (equivalence)."""

    margin: float  # on the scale of the differences (log ratios for ratios)
    p_value: float  # the larger of the two one-sided p-values

    @property
    def equivalent(self) -> bool:
        return self.p_value < 1 - LEVEL


def tost(differences: Sequence[float], margin: float) -> Tost | None:
    """TOST on per-seed differences against (-margin, +margin); None for fewer than two seeds.

    Equivalence at the 5% level is the same as the 90% t interval lying inside the margin."""
    values = np.asarray(differences, dtype=np.float64)
    if values.size < 2:
        return None
    mean, sd = float(values.mean()), float(values.std(ddof=1))
    if sd <= 1e-12 * max(1.0, abs(mean)):  # no spread: equivalent exactly when the constant lies inside
        return Tost(margin, 0.0 if abs(mean) < margin else 1.0)
    above = stats.ttest_1samp(values, popmean=-margin, alternative="greater").pvalue
    below = stats.ttest_1samp(values, popmean=margin, alternative="less").pvalue
    return Tost(margin, float(max(above, below)))


def holm(p_values: Sequence[float | None]) -> list[float | None]:
    """Holm's step-down adjustment of one family of p-values (``None`` entries are left out).

    Sorted ascending, the i-th smallest of m (i from 0) becomes (m - i) * p, made non-decreasing
    along the order and capped at 1. It controls the family-wise error rate at the level used;
    scipy's ``false_discovery_control`` is Benjamini-Hochberg, a different (FDR) guarantee."""
    present = [(p, index) for index, p in enumerate(p_values) if p is not None]
    adjusted: list[float | None] = [None] * len(p_values)
    running = 0.0
    for rank, (p, index) in enumerate(sorted(present)):
        running = max(running, min(1.0, (len(present) - rank) * p))
        adjusted[index] = running
    return adjusted
