"""How closely an export computes what its framework computes, on the same test images."""

from __future__ import annotations

import numpy as np

from stages.common import metrics


def agreement(exported: np.ndarray, framework: np.ndarray, labels: np.ndarray) -> dict[str, float | int]:
    """The largest absolute difference in class probabilities, the share and count of images whose
    predicted class differs, and the export's accuracy."""
    same = exported.argmax(axis=1) == framework.argmax(axis=1)
    return {"max_abs_probability_difference": float(np.max(np.abs(exported.astype(np.float64) - framework))),
            "same_class_share": float(np.mean(same)), "different_class_images": int(np.count_nonzero(~same)),
            "test_accuracy": metrics.accuracy(labels, exported.argmax(axis=1))}
