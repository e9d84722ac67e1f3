"""Classification metrics in plain numpy, and the inference-timing loops, shared by evaluate,
export and timing.

All functions take class-index arrays, probability arrays or callables, never paths.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from stages.common.params import EvaluateParams


def confusion_matrix(true: np.ndarray, predicted: np.ndarray, num_classes: int) -> np.ndarray:
    """counts[i, j] = number of items of true class i predicted as class j."""
    true = np.asarray(true, dtype=np.int64)
    predicted = np.asarray(predicted, dtype=np.int64)
    if true.shape != predicted.shape:
        raise ValueError(f"true labels {true.shape} and predictions {predicted.shape} differ in shape")
    return np.bincount(true * num_classes + predicted, minlength=num_classes * num_classes).reshape(
        num_classes, num_classes)


def per_class_scores(confusion: np.ndarray) -> dict[str, np.ndarray]:
    """Precision, recall, F1 and support per class; 0 where a ratio has no denominator."""
    confusion = np.asarray(confusion, dtype=np.float64)
    true_positive = np.diag(confusion)
    predicted_count = confusion.sum(axis=0)
    support = confusion.sum(axis=1)
    precision = np.divide(true_positive, predicted_count, out=np.zeros_like(true_positive), where=predicted_count > 0)
    recall = np.divide(true_positive, support, out=np.zeros_like(true_positive), where=support > 0)
    denominator = precision + recall
    f1 = np.divide(2 * precision * recall, denominator, out=np.zeros_like(true_positive), where=denominator > 0)
    return {"precision": precision, "recall": recall, "f1": f1, "support": support.astype(np.int64)}


def accuracy(true: np.ndarray, predicted: np.ndarray) -> float:
    true = np.asarray(true)
    return float(np.mean(true == np.asarray(predicted))) if true.size else 0.0


def cross_entropy(probabilities: np.ndarray, true: np.ndarray) -> float:
    """Mean negative log-likelihood of the true classes (probabilities clipped away from 0)."""
    picked = probabilities[np.arange(true.shape[0]), np.asarray(true, dtype=np.int64)]
    return float(-np.mean(np.log(np.clip(picked.astype(np.float64), 1e-12, 1.0))))


def percentile_ms(seconds: list[float] | np.ndarray, percentile: float) -> float:
    return float(np.percentile(np.asarray(seconds, dtype=np.float64), percentile) * 1000.0)


def measure_latency(predict_one: Callable[[np.ndarray], object], images: np.ndarray,
                    settings: EvaluateParams) -> list[float]:
    """Seconds per single-image call, after untimed warm-up calls."""
    count = images.shape[0]
    for index in range(settings.latency_warmup):
        predict_one(images[index % count: index % count + 1])
    seconds = []
    for index in range(settings.latency_samples):
        image = images[index % count: index % count + 1]
        started = time.perf_counter()
        predict_one(image)
        seconds.append(time.perf_counter() - started)
    return seconds


def measure_throughput(predict_all: Callable[[], np.ndarray], count: int,
                       repeats: int) -> tuple[np.ndarray, list[float]]:
    """Images per second of ``repeats`` timed passes (after one untimed warm-up pass); the
    probabilities of the last pass. Identical passes are checked: inference must be deterministic."""
    probabilities = predict_all()  # warm-up: tracing and allocation must not count
    rates = []
    for _ in range(repeats):
        started = time.perf_counter()
        again = predict_all()
        rates.append(count / (time.perf_counter() - started))
        if not np.array_equal(again, probabilities):
            raise RuntimeError("two inference passes over the same test images gave different probabilities")
    return probabilities, rates


def overall_rate(rates: Sequence[float]) -> float:
    """Images per second over passes of equal size taken together: all their images over all their
    seconds, which is the harmonic mean of the passes' rates. The timing stage's throughput, rather
    than the median pass: on a 2-core Xeon, Keras' ``Model.predict`` over the 10,000 test images
    took about 0.42 s in some passes and 0.70 s in others, within one process, the slow ones spending
    about 0.28 s after the last batch in TensorFlow's teardown of the call's tf.data pipeline. The
    median of three such passes lands on either mode (14,000 or 24,000 images/s); their total time
    averages the two as a user calling ``predict`` again and again meets them."""
    return statistics.harmonic_mean(rates)
