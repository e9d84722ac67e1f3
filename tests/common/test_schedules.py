"""stages/common/schedules.py: the per-step learning-rate tables both frameworks read."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from stages.common.params import validate
from stages.common.schedules import learning_rates
from tests.support import project_params


@pytest.fixture(scope="module")
def loaded():
    return validate(project_params())


def schedule(loaded, kind: str, epochs: int = 4, learning_rate: float = 0.003, warmup_fraction: float = 0.2):
    return dataclasses.replace(loaded.train, schedule=kind, epochs=epochs, learning_rate=learning_rate,
                               warmup_fraction=warmup_fraction)


def test_constant_schedule(loaded):
    rates = learning_rates(schedule(loaded, "constant"), steps_per_epoch=25)

    assert rates.shape == (100,) and rates.dtype == np.float64
    assert np.all(rates == 0.003)


def test_cosine_schedule(loaded):
    rates = learning_rates(schedule(loaded, "cosine", epochs=2), steps_per_epoch=50)

    assert rates.shape == (100,)
    assert rates[0] == 0.003  # starts at the peak
    assert np.all(np.diff(rates) < 0)  # then only decreases
    assert rates[50] == pytest.approx(0.0015)  # half-way: half the peak
    assert 0 < rates[-1] < 0.003 * 1e-3  # ends just above 0


def test_onecycle_schedule(loaded):
    rates = learning_rates(schedule(loaded, "onecycle", epochs=4, warmup_fraction=0.2), steps_per_epoch=250)

    assert rates.shape == (1000,)
    warmup = 200
    assert rates[0] == pytest.approx(0.003 / 25)  # warm-up starts at peak / 25
    assert np.all(np.diff(rates[: warmup + 1]) > 0)  # warm-up: strictly increasing, linearly
    np.testing.assert_allclose(np.diff(rates[:warmup]), (0.003 - 0.003 / 25) / warmup)
    assert int(np.argmax(rates)) == warmup and rates.max() == pytest.approx(0.003)  # the peak, once
    assert np.all(np.diff(rates[warmup:]) < 0)  # then decays
    assert rates[-1] == pytest.approx(0.003 / 1e4, rel=0.05)  # to peak / 1e4
    assert rates.min() >= 0.003 / 1e4


def test_onecycle_without_warmup_starts_at_the_peak(loaded):
    rates = learning_rates(schedule(loaded, "onecycle", warmup_fraction=0.0), steps_per_epoch=10)

    assert rates[0] == 0.003
    assert np.all(np.diff(rates) < 0)


def test_schedule_of_a_single_step(loaded):
    for kind in ("constant", "cosine", "onecycle"):
        rates = learning_rates(schedule(loaded, kind, epochs=1), steps_per_epoch=1)
        assert rates.shape == (1,) and rates[0] == pytest.approx(0.003), kind


def test_project_schedule_shape(loaded):
    """The shipped recipe (whatever its values): one rate per optimizer step, peaking at learning_rate."""
    steps = math.ceil(54_000 / loaded.train.batch_size)
    rates = learning_rates(loaded.train, steps)

    assert rates.shape == (loaded.train.epochs * steps,)
    assert rates.max() == pytest.approx(loaded.train.learning_rate)
    assert np.all(rates > 0)


def test_onecycle_with_a_single_warmup_step_starts_there(loaded):
    # 5 steps x 0.2 = exactly one warm-up step: it must be set (peak / 25), not left uninitialised.
    rates = learning_rates(schedule(loaded, "onecycle", epochs=1, warmup_fraction=0.2), steps_per_epoch=5)

    assert rates[0] == pytest.approx(0.003 / 25)
    assert rates[1] == pytest.approx(0.003)
    assert np.all(np.isfinite(rates)) and np.all(np.diff(rates[1:]) < 0)
