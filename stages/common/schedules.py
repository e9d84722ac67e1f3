"""Learning-rate schedules as one table of per-step rates, shared by both trainers.

Both frameworks read the rate for optimizer step ``s`` from the same numpy table, so the
schedules are identical by construction rather than by two implementations agreeing.

- constant: the peak rate throughout.
- cosine: cosine decay from the peak to 0 over all steps.
- onecycle: linear warm-up from peak/25 to the peak over ``warmup_fraction`` of the steps, then
  cosine decay to peak/1e4 (the shape of PyTorch's OneCycleLR, with a linear warm-up).
"""

from __future__ import annotations

import numpy as np

from stages.common.params import TrainParams

WARMUP_START_DIVISOR = 25.0
FINAL_DIVISOR = 1e4


def learning_rates(settings: TrainParams, steps_per_epoch: int) -> np.ndarray:
    """float64 array of length epochs * steps_per_epoch: the rate before each optimizer step."""
    total = settings.epochs * steps_per_epoch
    peak = settings.learning_rate
    steps = np.arange(total, dtype=np.float64)
    if settings.schedule == "constant":
        return np.full(total, peak)
    if settings.schedule == "cosine":
        return peak * 0.5 * (1.0 + np.cos(np.pi * steps / total))
    warmup = int(round(total * settings.warmup_fraction))
    start, final = peak / WARMUP_START_DIVISOR, peak / FINAL_DIVISOR
    rates = np.empty(total)
    if warmup > 0:
        rates[:warmup] = start + (peak - start) * steps[:warmup] / warmup
    decay_steps = max(total - warmup, 1)
    progress = (steps[warmup:] - warmup) / decay_steps
    rates[warmup:] = final + (peak - final) * 0.5 * (1.0 + np.cos(np.pi * progress))
    return rates
