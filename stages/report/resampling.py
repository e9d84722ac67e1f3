"""Uncertainty that covers the test set as well as the seeds, for the quality metrics.

Every seed scores its models on the same test images, so the across-seed t interval
(``stats.paired_difference``) leaves out the test set's own sampling error. Two tools add it:

- ``two_level_bootstrap``: a paired bootstrap that resamples seeds (with replacement) and, at
  the same time, test images within each class (with replacement, so every resample keeps the
  class counts), applying the same draw to both arms. It runs ``scipy.stats.bootstrap`` with
  one sample of seed positions and one sample of image indices per class, resampled
  independently (``paired=False``): that is exactly the two-level, stratified draw. The
  interval is the percentile interval (the 2.5th and 97.5th percentiles of the difference over
  resamples; BCa would need a jackknife over every test image). Fixed seed: the same inputs give
  the same interval.
- ``equivalence``: from the same bootstrap distribution, the 90% percentile interval and the
  bootstrap TOST p-value against a margin: per side, ``(1 + resamples at or below -margin)`` or
  ``(1 + resamples at or above +margin)`` over ``resamples + 1``, and the larger of the two. The
  90% interval lies inside the margin when each side holds fewer than 5% of the resamples. The smallest p-value it
  can give is ``1 / (resamples + 1)``, so ``resamples_for(family)`` grows the resamples with
  the family the p-values are Holm-adjusted in.
- ``test_set_error``: the jackknife standard error, over test images, of the seed-averaged
  difference (every seed kept): what the test set's sampling alone contributes. For a mean
  over images (accuracy, loss) it is the standard error of the per-image differences.
- ``sign_flip``: a test of these trained models on this test set. For each test image, the
  difference between the arms averaged over seeds; under "no difference" its sign is as likely
  either way, so ``scipy.stats.permutation_test`` (``permutation_type='samples'`` on one sample
  flips signs) compares the observed sum with sign-flipped ones (exactly when the images that
  differ are few enough). It holds the trained models fixed, so it covers the sampling of the
  test images and nothing of training randomness: no verdict about the frameworks rests on it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import stats as scipy_stats

from stages.report.stats import LEVEL, Interval

RESAMPLES = 2000
PERMUTATIONS = 9999
RANDOM_SEED = 20240601
BATCH = 32  # resamples per vectorised call: bounds memory at BATCH x seeds x test images
ALPHA = 0.05  # each one-sided test of TOST; the 90% interval


@dataclass(frozen=True)
class ArmImages:
    """One arm's answers, seed by seed, on every test image (rows in the common seeds' order)."""

    predicted: np.ndarray  # int64, (seeds, images)
    loss: np.ndarray  # float64, (seeds, images): -log p(true class), clipped as the evaluation does


def arm_images(probabilities: list[np.ndarray], labels: np.ndarray) -> ArmImages:
    stack = np.stack([np.asarray(p) for p in probabilities])
    picked = stack[:, np.arange(labels.shape[0]), labels].astype(np.float64)
    return ArmImages(stack.argmax(axis=2).astype(np.int64), -np.log(np.clip(picked, 1e-12, 1.0)))


def per_image(metric: str, arm: ArmImages, labels: np.ndarray) -> np.ndarray:
    """(seeds, images) values whose mean over images is the metric (accuracy, test loss)."""
    if metric == "test_accuracy":
        return (arm.predicted == labels[None, :]).astype(np.float64)
    if metric == "test_loss":
        return arm.loss
    raise ValueError(f"{metric} is not a mean over test images")


def _macro_f1(predicted: np.ndarray, truth: np.ndarray, classes: int) -> np.ndarray:
    """Macro F1 of each row: predicted and truth (..., images) -> (...)."""
    rows = int(np.prod(predicted.shape[:-1]))
    codes = (truth * classes + predicted).reshape(rows, -1) + (np.arange(rows) * classes * classes)[:, None]
    confusion = np.bincount(codes.ravel(), minlength=rows * classes * classes).reshape(rows, classes, classes)
    hits = np.diagonal(confusion, axis1=1, axis2=2).astype(np.float64)
    predicted_count, support = confusion.sum(axis=1), confusion.sum(axis=2)
    precision = np.divide(hits, predicted_count, out=np.zeros_like(hits), where=predicted_count > 0)
    recall = np.divide(hits, support, out=np.zeros_like(hits), where=support > 0)
    total = precision + recall
    f1 = np.divide(2 * precision * recall, total, out=np.zeros_like(hits), where=total > 0)
    return f1.mean(axis=1).reshape(predicted.shape[:-1])


def difference_statistic(metric: str, first: ArmImages, second: ArmImages,
                         labels: np.ndarray) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """f(seed rows (b, n), image indices (b, m)) -> (b,) differences first - second of the metric,
    averaged over the chosen seeds, on the chosen images."""
    if metric == "macro_f1":
        classes = int(max(labels.max(), first.predicted.max(), second.predicted.max())) + 1

        def f1_difference(seeds: np.ndarray, images: np.ndarray) -> np.ndarray:
            truth = np.broadcast_to(labels[images][:, None, :], (*seeds.shape, images.shape[1]))
            scores = [_macro_f1(arm.predicted[seeds[:, :, None], images[:, None, :]], truth, classes)
                      for arm in (first, second)]
            return (scores[0] - scores[1]).mean(axis=1)
        return f1_difference
    difference = per_image(metric, first, labels) - per_image(metric, second, labels)

    def mean_difference(seeds: np.ndarray, images: np.ndarray) -> np.ndarray:
        return difference[seeds[:, :, None], images[:, None, :]].mean(axis=(1, 2))
    return mean_difference


def two_level_distribution(metric: str, first: ArmImages, second: ArmImages, labels: np.ndarray,
                           resamples: int = RESAMPLES) -> np.ndarray:
    """The bootstrap distribution (``resamples`` values) of first - second (mean over seeds of the
    metric), resampling seeds and stratified test images together."""
    labels = np.asarray(labels, np.int64)
    n = first.predicted.shape[0]
    statistic = difference_statistic(metric, first, second, labels)
    strata = [np.flatnonzero(labels == c) for c in np.unique(labels)]
    fixed = np.concatenate([s for s in strata if s.size < 2] + [np.zeros(0, np.int64)])
    groups = [s for s in strata if s.size >= 2]  # a class of one image is the same in every resample
    samples = ([np.arange(n)] if n >= 2 else []) + groups

    def vectorised(*drawn: np.ndarray, axis: int = -1) -> np.ndarray:
        drawn = tuple(np.atleast_2d(sample) for sample in drawn)
        batch = drawn[0].shape[0]
        seeds = drawn[0] if n >= 2 else np.zeros((batch, 1), np.int64)
        parts = list(drawn[1:] if n >= 2 else drawn) + [np.broadcast_to(fixed, (batch, fixed.size))]
        images = np.concatenate(parts, axis=1).astype(np.int64)
        return statistic(seeds.astype(np.int64), images)

    result = scipy_stats.bootstrap(samples, vectorised, n_resamples=resamples, paired=False, vectorized=True,
                                   confidence_level=LEVEL, method="percentile", batch=BATCH,
                                   random_state=np.random.default_rng(RANDOM_SEED))
    return np.asarray(result.bootstrap_distribution, np.float64).ravel()


def percentile_interval(distribution: np.ndarray, level: float = LEVEL) -> Interval:
    """The percentile interval of a bootstrap distribution (as ``scipy.stats.bootstrap`` takes it)."""
    low, high = np.percentile(distribution, [50 * (1 - level), 50 * (1 + level)])
    return Interval(float(low), float(high))


def two_level_bootstrap(metric: str, first: ArmImages, second: ArmImages, labels: np.ndarray,
                        resamples: int = RESAMPLES) -> Interval:
    """95% percentile interval of first - second (mean over seeds of the metric), resampling seeds
    and stratified test images together."""
    return percentile_interval(two_level_distribution(metric, first, second, labels, resamples))


@dataclass(frozen=True)
class Equivalence:
    """TOST on the seeds-and-test-images bootstrap distribution."""

    margin: float
    interval: Interval  # 90% percentile interval
    p_value: float  # the larger of the two one-sided bootstrap p-values

    @property
    def inside(self) -> bool:
        return -self.margin < self.interval.low and self.interval.high < self.margin


def equivalence(distribution: np.ndarray, margin: float) -> Equivalence:
    values = np.asarray(distribution, np.float64)
    below, above = int(np.sum(values <= -margin)), int(np.sum(values >= margin))
    p_value = (1 + max(below, above)) / (values.size + 1)
    return Equivalence(margin, percentile_interval(values, 1 - 2 * ALPHA), float(min(1.0, p_value)))


def resamples_for(family: int) -> int:
    """Resamples whose smallest bootstrap p-value, 1 / (resamples + 1), stays below half the level
    after Holm's largest factor (the family's size): at least ``RESAMPLES``."""
    return max(RESAMPLES, math.ceil(2 * family / ALPHA))


def test_set_error(metric: str, first: ArmImages, second: ArmImages, labels: np.ndarray) -> float:
    """Jackknife standard error over test images of first - second (mean over every seed)."""
    labels = np.asarray(labels, np.int64)
    statistic = difference_statistic(metric, first, second, labels)
    n, count = first.predicted.shape[0], labels.shape[0]
    kept = np.arange(count - 1)
    values = []
    for start in range(0, count, BATCH):
        left_out = np.arange(start, min(start + BATCH, count))
        images = kept[None, :] + (kept[None, :] >= left_out[:, None])  # every image but one, per row
        values.append(statistic(np.broadcast_to(np.arange(n), (left_out.size, n)), images))
    leave_one_out = np.concatenate(values)
    return float(math.sqrt((count - 1) / count * np.sum((leave_one_out - leave_one_out.mean()) ** 2)))


test_set_error.__test__ = False  # type: ignore[attr-defined]  # not a pytest test


def sign_flip(metric: str, first: ArmImages, second: ArmImages, labels: np.ndarray,
              permutations: int = PERMUTATIONS) -> float:
    """Two-sided p-value of 'no difference' for these trained models on this test set."""
    differences = (per_image(metric, first, labels) - per_image(metric, second, labels)).mean(axis=0)
    differing = differences[np.abs(differences) > 1e-12]  # a zero keeps its value when flipped
    if differing.size == 0:
        return 1.0
    result = scipy_stats.permutation_test((differing,), lambda x, axis: np.sum(x, axis=axis),
                                          permutation_type="samples", n_resamples=permutations,
                                          alternative="two-sided", vectorized=True, batch=256,
                                          random_state=np.random.default_rng(RANDOM_SEED))
    return float(min(1.0, result.pvalue))
