"""stages/common/metrics.py: classification metrics against hand-computed cases; the inference-timing
loops."""

from __future__ import annotations

import math
import statistics
import warnings

import numpy as np
import pytest

from stages.common import metrics
from stages.common.params import EvaluateParams
from tests.support import FakeClock

# What a model predicts for 5 images of 3 classes: the timing loops only pass it through.
PROBABILITIES = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6], [0.2, 0.5, 0.3], [0.1, 0.1, 0.8], [0.5, 0.1, 0.4]])

TRUE = np.array([0, 0, 0, 1, 1, 2])
PREDICTED = np.array([0, 0, 1, 1, 0, 0])  # class 2 is never predicted; class 3 never occurs at all


def test_confusion_matrix():
    confusion = metrics.confusion_matrix(TRUE, PREDICTED, num_classes=4)

    np.testing.assert_array_equal(confusion, [[2, 1, 0, 0],
                                              [1, 1, 0, 0],
                                              [1, 0, 0, 0],
                                              [0, 0, 0, 0]])


def test_confusion_matrix_rows_are_true_classes():
    confusion = metrics.confusion_matrix(np.array([2]), np.array([0]), num_classes=3)

    assert confusion[2, 0] == 1 and confusion.sum() == 1


def test_confusion_matrix_shapes_must_agree():
    with pytest.raises(ValueError, match="differ in shape"):
        metrics.confusion_matrix(np.array([0, 1]), np.array([0]), num_classes=2)


def test_per_class_scores_with_a_class_never_predicted():
    confusion = metrics.confusion_matrix(TRUE, PREDICTED, num_classes=4)

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no division-by-zero warnings for the empty classes
        scores = metrics.per_class_scores(confusion)

    np.testing.assert_allclose(scores["precision"], [2 / 4, 1 / 2, 0, 0])
    np.testing.assert_allclose(scores["recall"], [2 / 3, 1 / 2, 0, 0])
    f1_first = 2 * (1 / 2) * (2 / 3) / (1 / 2 + 2 / 3)
    np.testing.assert_allclose(scores["f1"], [f1_first, 1 / 2, 0, 0])
    np.testing.assert_array_equal(scores["support"], [3, 2, 1, 0])
    assert scores["support"].dtype == np.int64


def test_perfect_scores():
    confusion = metrics.confusion_matrix(np.array([0, 1, 2]), np.array([0, 1, 2]), num_classes=3)

    scores = metrics.per_class_scores(confusion)

    for name in ("precision", "recall", "f1"):
        np.testing.assert_array_equal(scores[name], [1.0, 1.0, 1.0])


def test_accuracy():
    assert metrics.accuracy(TRUE, PREDICTED) == 0.5
    assert metrics.accuracy(np.array([], dtype=int), np.array([], dtype=int)) == 0.0


def test_cross_entropy():
    probabilities = np.array([[0.5, 0.5, 0.0], [0.1, 0.9, 0.0], [0.2, 0.2, 0.6]], dtype=np.float32)

    loss = metrics.cross_entropy(probabilities, np.array([0, 1, 2]))

    assert loss == pytest.approx(-(math.log(0.5) + math.log(0.9) + math.log(0.6)) / 3, rel=1e-6)


def test_cross_entropy_of_a_zero_probability_is_finite():
    loss = metrics.cross_entropy(np.array([[1.0, 0.0]]), np.array([1]))

    assert loss == pytest.approx(-math.log(1e-12))


def test_percentile_ms():
    assert metrics.percentile_ms([0.001, 0.003, 0.002], 50) == pytest.approx(2.0)
    assert metrics.percentile_ms(np.array([0.001, 0.002, 0.003]), 100) == pytest.approx(3.0)


def test_confusion_matrix_of_uint8_labels_with_many_classes_does_not_overflow():
    # Prepared labels are uint8: true * classes + predicted must not be computed in uint8.
    true = np.array([29, 0, 29], dtype=np.uint8)
    predicted = np.array([28, 0, 29], dtype=np.uint8)

    confusion = metrics.confusion_matrix(true, predicted, num_classes=30)

    assert confusion.shape == (30, 30) and confusion.sum() == 3
    assert confusion[29, 28] == 1 and confusion[0, 0] == 1 and confusion[29, 29] == 1


def test_scores_without_a_denominator_are_zero_whatever_memory_held_before():
    confusion = metrics.confusion_matrix(TRUE, PREDICTED, num_classes=4)
    for _ in range(20):
        # Freed buffers of the same size, full of a non-zero value: an uninitialised output reuses them.
        junk = [np.full(4, 7.5) for _ in range(10)]
        del junk
        scores = metrics.per_class_scores(confusion)
        assert scores["recall"][3] == 0 and scores["precision"][3] == 0 and scores["f1"][3] == 0
        assert scores["precision"][2] == 0 and scores["f1"][2] == 0


def test_cross_entropy_of_a_probability_rounded_above_one_is_zero_not_negative():
    probabilities = np.array([[np.nextafter(np.float32(1), np.float32(2)), 0.0]], dtype=np.float32)

    assert metrics.cross_entropy(probabilities, np.array([0])) == 0.0


def test_throughput_times_each_repeat_after_an_untimed_warm_up():
    calls = []

    def predict_all():
        calls.append(1)
        return PROBABILITIES

    probabilities, rates = metrics.measure_throughput(predict_all, count=5, repeats=3)

    assert len(calls) == 4 and len(rates) == 3  # 1 warm-up + 3 timed
    assert all(rate > 0 for rate in rates)
    np.testing.assert_array_equal(probabilities, PROBABILITIES)


def test_throughput_refuses_inference_that_is_not_deterministic():
    outputs = iter([PROBABILITIES, PROBABILITIES, PROBABILITIES + 1e-7])

    with pytest.raises(RuntimeError, match="different probabilities"):
        metrics.measure_throughput(lambda: next(outputs), count=5, repeats=2)


def test_latency_times_one_image_per_call_after_warm_up():
    images = np.arange(3 * 4, dtype=np.float32).reshape(3, 2, 2, 1)
    seen = []
    settings = EvaluateParams(batch_size=10, throughput_repeats=1, latency_samples=5, latency_warmup=2)

    seconds = metrics.measure_latency(lambda image: seen.append(image.copy()), images, settings)

    assert len(seconds) == 5 and all(value >= 0 for value in seconds)
    assert [image.shape for image in seen] == [(1, 2, 2, 1)] * 7
    # Warm-up images 0, 1; then timed images 0, 1, 2, 0, 1 (cycling through the test set).
    assert [int(image[0, 0, 0, 0]) // 4 for image in seen] == [0, 1, 0, 1, 2, 0, 1]


def test_throughput_is_images_per_second_of_each_timed_pass(monkeypatch):
    monkeypatch.setattr(metrics, "time", FakeClock([0.5, 0.25, 2.0]))

    _, rates = metrics.measure_throughput(lambda: PROBABILITIES, count=5, repeats=3)

    assert rates == [10.0, 20.0, 2.5]


def test_latency_is_the_seconds_of_each_timed_call(monkeypatch):
    monkeypatch.setattr(metrics, "time", FakeClock([0.001, 0.003, 0.002]))
    settings = EvaluateParams(batch_size=10, throughput_repeats=1, latency_samples=3, latency_warmup=1)

    seconds = metrics.measure_latency(lambda image: None, np.zeros((2, 2, 2, 1), np.float32), settings)

    assert seconds == pytest.approx([0.001, 0.003, 0.002], abs=1e-12)


def test_overall_rate_is_all_images_over_all_seconds_not_the_median_pass():
    # two fast passes and one slow one of 10,000 images each, as Keras' predict gives on a 2-core Xeon
    rates = [10_000 / 0.42, 10_000 / 0.70, 10_000 / 0.42]

    assert metrics.overall_rate(rates) == pytest.approx(30_000 / (0.42 + 0.70 + 0.42))
    assert metrics.overall_rate(rates) < statistics.median(rates)
