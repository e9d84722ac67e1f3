"""What the report compares: ``METRICS`` is the one definition (key, label, where its value is
read, difference or ratio, direction, format, noun); the Markdown tables, the figures, the
top-level ``reports/metrics.json``, the tuning section, ``stages/reproduce`` and the tests all
read it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from stages.report.inputs import Replicate


def percent(value: float) -> str:
    return f"{100 * value:.2f}%"


def p_text(value: float | None) -> str:
    """A p-value as the report prints it: two significant digits, ``-`` where there is none."""
    return "-" if value is None else f"{value:.2g}"


def fixed(digits: int) -> Callable[[float], str]:
    return lambda value: f"{value:,.{digits}f}"


@dataclass(frozen=True)
class Metric:
    key: str  # name in reports/metrics.json
    label: str  # row label, unit included
    value: Callable[[Replicate], float]
    compare: Literal["difference", "ratio"]  # quality: A - B; speed: A / B
    higher_is_better: bool
    text: Callable[[float], str]
    noun: str  # in sentences: "test accuracy", "training time"


METRICS = (
    Metric("test_accuracy", "Test accuracy", lambda r: r.evaluation.test_accuracy, "difference", True, percent,
           "test accuracy"),
    Metric("test_loss", "Test loss (cross-entropy)", lambda r: r.evaluation.test_loss, "difference", False,
           fixed(4), "test loss"),
    Metric("macro_f1", "Macro F1", lambda r: r.evaluation.macro_f1, "difference", True, fixed(4), "macro F1"),
    Metric("train_seconds", "Training time (s)", lambda r: r.training.train_seconds, "ratio", False, fixed(1),
           "training time"),
    Metric("train_images_per_second", "Training throughput (images/s)", lambda r: r.training.images_per_second,
           "ratio", True, fixed(0), "training throughput"),
    Metric("inference_images_per_second", "Inference throughput (images/s)",
           lambda r: r.evaluation.throughput_images_per_second, "ratio", True, fixed(0), "inference throughput"),
    Metric("latency_ms", "Latency, one image, median (ms)", lambda r: r.evaluation.latency_ms_median, "ratio", False,
           fixed(3), "single-image latency"),
)
METRIC = {metric.key: metric for metric in METRICS}
