"""The two-level bootstrap's strata, checked exactly (stages/report/resampling.py).

Unequal classes (one of a single image) and a difference between the arms confined to one class:
every resample's image indices are recorded where the bootstrap hands them to its statistic
(``resampling.difference_statistic``), and each resample must hold every class exactly as often
as the test set does, draw each class's images from that class only, and the interval must be
the percentile interval of exactly those resamples, and scipy's ``bootstrap`` on the same
strata. Resampling the images across classes changes the class counts from one resample to the
next, and the interval with them."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as scipy_stats

from stages.report import resampling
from stages.report.stats import LEVEL

SIZES = {0: 1, 1: 7, 2: 23, 3: 3, 4: 40}  # images per class: unequal, one class of a single image
SEEDS = 4
DIFFERING = 2  # the one class on which the arms differ


def strata_arms():
    """(first, second, labels): the first arm right on every image; the second wrong on some
    images of ``DIFFERING`` only, a different set for each seed. The classes are interleaved."""
    rng = np.random.default_rng(3)
    labels = rng.permutation(np.repeat(list(SIZES), list(SIZES.values()))).astype(np.int64)
    classes = len(SIZES)

    def arm(wrong: np.ndarray) -> resampling.ArmImages:
        predicted = np.where(wrong, (labels + 1) % classes, labels)
        probabilities = np.full((SEEDS, labels.size, classes), 0.05, np.float32)
        probabilities[np.arange(SEEDS)[:, None], np.arange(labels.size)[None, :], predicted] = 0.8
        probabilities[:, :, :] += rng.uniform(0, 0.01, probabilities.shape).astype(np.float32)  # losses differ
        return resampling.arm_images(list(probabilities / probabilities.sum(axis=2, keepdims=True)), labels)

    differing = labels == DIFFERING
    first = arm(np.zeros((SEEDS, labels.size), bool))
    second = arm(differing[None, :] & (rng.random((SEEDS, labels.size)) < np.array([0.2, 0.4, 0.3, 0.6])[:, None]))
    return first, second, labels


def record_resamples(monkeypatch) -> list[tuple[np.ndarray, np.ndarray]]:
    """Every (seed rows, image indices) the bootstrap's statistic is called with, a row per resample."""
    calls: list[tuple[np.ndarray, np.ndarray]] = []
    real = resampling.difference_statistic

    def recording(metric, first, second, labels):
        statistic = real(metric, first, second, labels)

        def recorded(seeds: np.ndarray, images: np.ndarray) -> np.ndarray:
            calls.append((np.array(seeds), np.array(images)))
            return statistic(seeds, images)
        return recorded

    monkeypatch.setattr(resampling, "difference_statistic", recording)
    return calls


@pytest.mark.parametrize("metric", ["test_accuracy", "test_loss", "macro_f1"])
def test_every_resample_keeps_each_class_count_and_draws_each_class_from_itself(monkeypatch, metric):
    first, second, labels = strata_arms()
    calls = record_resamples(monkeypatch)

    resampling.two_level_bootstrap(metric, first, second, labels, resamples=300)

    seeds = np.concatenate([seed_rows for seed_rows, _ in calls])
    images = np.concatenate([image_rows for _, image_rows in calls])
    assert images.shape == (300, labels.size) and seeds.shape == (300, SEEDS)
    counts = np.stack([np.bincount(labels[row], minlength=len(SIZES)) for row in images])
    np.testing.assert_array_equal(counts, np.broadcast_to(list(SIZES.values()), counts.shape))
    single = np.flatnonzero(labels == 0)
    assert np.all(np.sum(images == single, axis=1) == 1)  # a class of one image: that image, once
    # Drawn with replacement: the resamples differ, and repeat images within a class.
    assert len({row.tobytes() for row in images}) == 300
    assert np.mean([np.unique(row).size < labels.size for row in images]) > 0.99
    assert seeds.min() >= 0 and seeds.max() < SEEDS and np.mean([np.unique(row).size < SEEDS for row in seeds]) > 0.5


@pytest.mark.parametrize("metric", ["test_accuracy", "test_loss"])
def test_the_interval_is_the_percentile_interval_of_those_resamples_and_scipys_on_the_same_strata(monkeypatch,
                                                                                                 metric):
    first, second, labels = strata_arms()
    differences = resampling.per_image(metric, first, labels) - resampling.per_image(metric, second, labels)
    if metric == "test_accuracy":  # the arms differ on the one class only
        assert np.all(differences[:, labels != DIFFERING] == 0) and np.any(differences[:, labels == DIFFERING])
    calls = record_resamples(monkeypatch)

    interval = resampling.two_level_bootstrap(metric, first, second, labels)

    # The statistic of each recorded resample, by hand: the mean over its seeds and its images.
    values = np.concatenate([differences[seeds[:, :, None], images[:, None, :]].mean(axis=(1, 2))
                             for seeds, images in calls])
    assert values.size == resampling.RESAMPLES
    low, high = np.percentile(values, [100 * (1 - LEVEL) / 2, 100 * (1 + LEVEL) / 2])
    assert (interval.low, interval.high) == pytest.approx((low, high), abs=1e-12)

    # scipy's bootstrap with the seeds as one sample and each class's images as one sample each.
    strata = [np.flatnonzero(labels == label) for label in SIZES]
    single = np.concatenate([stratum for stratum in strata if stratum.size == 1])

    def mean_difference(seed_rows, *classes, axis=-1):
        seed_rows = np.atleast_2d(seed_rows)
        images = np.concatenate([np.atleast_2d(drawn) for drawn in classes]
                                + [np.broadcast_to(single, (seed_rows.shape[0], single.size))], axis=1)
        return differences[seed_rows[:, :, None], images[:, None, :]].mean(axis=(1, 2))

    reference = scipy_stats.bootstrap([np.arange(SEEDS)] + [stratum for stratum in strata if stratum.size > 1],
                                      mean_difference, n_resamples=resampling.RESAMPLES, paired=False,
                                      vectorized=True, confidence_level=LEVEL, method="percentile",
                                      batch=resampling.BATCH,
                                      random_state=np.random.default_rng(resampling.RANDOM_SEED))
    assert (interval.low, interval.high) == pytest.approx(
        (float(reference.confidence_interval.low), float(reference.confidence_interval.high)), abs=1e-12)
    # Without strata (the images drawn from the whole test set) the interval is another one.
    pooled = scipy_stats.bootstrap([np.arange(SEEDS), np.arange(labels.size)],
                                   lambda seed_rows, images, axis=-1: differences[
                                       np.atleast_2d(seed_rows)[:, :, None], np.atleast_2d(images)[:, None, :]
                                   ].mean(axis=(1, 2)),
                                   n_resamples=resampling.RESAMPLES, paired=False, vectorized=True,
                                   confidence_level=LEVEL, method="percentile", batch=resampling.BATCH,
                                   random_state=np.random.default_rng(resampling.RANDOM_SEED))
    assert abs(float(pooled.confidence_interval.high) - interval.high) > 1e-4
