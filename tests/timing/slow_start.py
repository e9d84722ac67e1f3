"""A toy framework whose first optimizer steps are slow (as compilation makes them): the numpy
backend of tests/numpy_backend.py, with ``SLOW_SECONDS`` of extra work in each of the first
``SLOW_STEPS`` steps of a training run. The timing stage's steady step time must not see them."""

from __future__ import annotations

import time

from tests.numpy_backend import *  # noqa: F403 - every Backend function, unchanged but fit
from tests.numpy_backend import fit as numpy_fit

SLOW_STEPS = 3
SLOW_SECONDS = 0.3


def fit(model, train, val, settings, learning_rates, seed, on_epoch_end, background=0.0, on_step_end=None):
    done = [0]

    def step_end(record):
        done[0] += 1
        if done[0] <= SLOW_STEPS:
            ending = time.perf_counter() + SLOW_SECONDS
            while time.perf_counter() < ending:  # busy, as a compiler would be
                pass
        if on_step_end is not None:
            on_step_end(record)
    numpy_fit(model, train, val, settings, learning_rates, seed, on_epoch_end, background, step_end)
