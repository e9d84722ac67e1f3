"""How closely an export computes what its framework computes, on the same test images."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from stages.common import metrics


@dataclass(frozen=True)
class Agreement:
    max_abs_probability_difference: float
    same_class_share: float  # share of images whose predicted class is the framework's
    different_class_images: int
    test_accuracy: float  # the export's


def agreement(exported: np.ndarray, framework: np.ndarray, labels: np.ndarray) -> Agreement:
    """The export's probabilities against the framework's on the same images, and its accuracy."""
    same = exported.argmax(axis=1) == framework.argmax(axis=1)
    return Agreement(float(np.max(np.abs(exported.astype(np.float64) - framework))), float(np.mean(same)),
                     int(np.count_nonzero(~same)), metrics.accuracy(labels, exported.argmax(axis=1)))


def fields(result: Agreement) -> dict[str, Any]:
    """``result`` as OnnxMetrics' fields of the same names."""
    return asdict(result)
