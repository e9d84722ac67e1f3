"""The framework-free reference of the equivalence suite (tests/reference_trainer.py) is itself
right: its hand-written gradients match finite differences on every layer kind it supports, and
its conventions differ exactly where they should."""

from __future__ import annotations

import numpy as np
import pytest

from stages.common.architecture import build_spec, initial_weights
from tests.framework_worker import case_data, case_settings
from tests.reference_trainer import Reference, _loss, train_reference
from tests.test_equivalence import CASES, DATA, model, running_variance_indices, train

KERAS_LIKE = {"moving_variance": "biased", "adam_epsilon": "uncorrected", "sgd_momentum": "weight_units",
              "sgd_weight_decay": "decoupled", "gelu": "exact"}


def case(name: str) -> dict:
    return {"name": name, "model": CASES[name][0], "train": CASES[name][1], **DATA}


@pytest.mark.parametrize("activation", ["relu", "tanh", "sigmoid", "gelu"])
@pytest.mark.parametrize("block_order", ["conv-norm-act-pool", "conv-pool-norm-act"])
def test_gradients_match_finite_differences(activation, block_order):
    spec_case = {"name": "gradients", "model": model(activation=activation, block_order=block_order),
                 "train": train(), **DATA}
    params = case_settings(spec_case)
    spec = build_spec(params.model, (DATA["image_size"], DATA["image_size"], 1), 10)
    reference = Reference(spec, initial_weights(spec, np.random.default_rng(3)), KERAS_LIKE)
    split, _ = case_data(spec_case)
    images, targets = split.images[:8].astype(np.float64), np.eye(10)[split.labels[:8]]
    start = [weight.copy() for weight in reference.weights]
    logits, caches = reference.forward(images, training=True)
    grads = reference.backward(_loss(logits, targets)[1], caches)
    rng = np.random.default_rng(0)

    def loss_at(index: int, position: tuple, shift: float) -> float:
        reference.weights = [weight.copy() for weight in start]
        reference.weights[index][position] += shift
        return _loss(reference.forward(images, training=True)[0], targets)[0]

    for index in reference.trainable:
        for _ in range(4):
            position = tuple(int(rng.integers(size)) for size in start[index].shape)
            numeric = (loss_at(index, position, 1e-6) - loss_at(index, position, -1e-6)) / 2e-6
            assert abs(numeric - grads[index][position]) < 1e-7, (index, position)


def test_momentum_units_agree_under_a_constant_rate_and_differ_under_a_schedule():
    constant = case("sgd_momentum_constant_batch_norm")
    scheduled = case("sgd_momentum_onecycle_no_batch_norm")
    gradient_units = {**KERAS_LIKE, "sgd_momentum": "gradient_units"}
    for name, apart in ((constant, False), (scheduled, True)):
        first, second = train_reference(name, KERAS_LIKE), train_reference(name, gradient_units)
        gap = max(float(np.abs(left - right).max()) for left, right in zip(first["weights"], second["weights"]))
        assert (gap > 1e-3) is apart, (name["name"], gap)


def test_the_reference_learns_and_the_unbiased_running_variance_is_the_larger():
    found = train_reference(case("adam_constant_batch_norm"), KERAS_LIKE)
    unbiased = train_reference(case("adam_constant_batch_norm"), {**KERAS_LIKE, "moving_variance": "unbiased"})
    assert found["step_loss"][-1] < found["step_loss"][0]
    (variance,) = running_variance_indices("adam_constant_batch_norm")
    assert np.all(unbiased["weights"][variance] > found["weights"][variance])


def test_the_reference_refuses_what_it_does_not_implement():
    with pytest.raises(ValueError, match="dropout"):
        train_reference({**case("adam_constant_batch_norm"), "model": model(dropout=0.25)}, KERAS_LIKE)
