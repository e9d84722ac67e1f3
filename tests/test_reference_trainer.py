"""The framework-free reference of the equivalence suite (tests/reference_trainer.py) is itself
right: its hand-written gradients match finite differences on every layer kind it supports, and
its conventions differ exactly where they should."""

from __future__ import annotations

import numpy as np
import pytest

from stages.common.architecture import build_spec, initial_weights
from tests.framework_worker import case_data, case_settings
from tests.reference_trainer import Reference, cross_entropy, train_reference
from tests.test_equivalence import DATA, case, model, running_variance_indices, train

KERAS_LIKE = {"moving_variance": "biased", "adam_epsilon": "uncorrected", "sgd_momentum": "weight_units",
              "sgd_weight_decay": "decoupled", "gelu": "exact"}


@pytest.mark.parametrize("activation", ["relu", "tanh", "sigmoid", "gelu"])
@pytest.mark.parametrize("block_order", ["conv-norm-act-pool", "conv-pool-norm-act"])
def test_gradients_match_finite_differences(activation, block_order):
    check_gradients(model(activation=activation, block_order=block_order))


@pytest.mark.parametrize("kernel_size", [3, 4], ids=["odd-kernel", "even-kernel"])
def test_gradients_match_finite_differences_with_same_padding_dropout_and_a_hidden_dense_layer(kernel_size):
    """What only the toy backend (tests/numpy_backend.py) trains with: same padding (an even kernel
    pads one more zero after than before), conv bias, and dropout masks, here held fixed."""
    spec = model(batch_norm=False, dropout=0.3, activation="relu")
    spec.update(padding="same")
    spec["conv_blocks"][0].update(kernel_size=kernel_size)
    check_gradients(spec)


def check_gradients(model_params: dict) -> None:
    spec_case = {"name": "gradients", "model": model_params, "train": train(), **DATA}
    params = case_settings(spec_case)
    spec = build_spec(params.model, (DATA["image_size"], DATA["image_size"], 1), 10)
    reference = Reference(spec, initial_weights(spec, np.random.default_rng(3)), KERAS_LIKE)
    split, _ = case_data(spec_case)
    images, targets = split.images[:8].astype(np.float64), np.eye(10)[split.labels[:8]]
    start = [weight.copy() for weight in reference.weights]
    logits, caches = reference.forward(images, training=True, draws=np.random.default_rng(9))
    grads = reference.backward(cross_entropy(logits, targets)[1], caches)
    rng = np.random.default_rng(0)

    def loss_at(index: int, position: tuple, shift: float) -> float:
        reference.weights = [weight.copy() for weight in start]
        reference.weights[index][position] += shift
        return cross_entropy(reference.forward(images, training=True, draws=np.random.default_rng(9))[0], targets)[0]

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


def test_same_padding_keeps_the_size_and_pads_as_the_frameworks_do():
    """A 4x4 kernel of ones over a 5x5 ramp with same padding: one zero row before, two after, so the
    first output sums rows 0..2 and the last rows 3..4 (TensorFlow's and PyTorch's split)."""
    spec_params = {"conv_blocks": [{"filters": 1, "kernel_size": 4, "convs": 1, "batch_norm": False, "pool": 1,
                                    "dropout": 0.0}], "padding": "same", "block_order": "conv-norm-act-pool",
                   "activation": "relu", "dense": [], "dense_dropout": 0.0}
    params = case_settings({"name": "padding", "model": spec_params, "train": train(), **DATA})
    spec = build_spec(params.model, (5, 5, 1), 10)
    weights = initial_weights(spec, np.random.default_rng(0))
    weights[0] = np.ones_like(weights[0])
    reference = Reference(spec, weights, KERAS_LIKE)
    image = np.tile(np.arange(5.0)[:, None], (1, 5))[None, :, :, None]  # row r holds r
    _, caches = reference.forward(image, training=False)
    patches = caches[0][0]
    conv = patches.reshape(5, 5, -1).sum(axis=-1)  # the conv's output before bias and activation
    assert conv.shape == (5, 5)
    assert conv[0, 2] == 4 * (0 + 1 + 2) and conv[4, 2] == 4 * (3 + 4)


def test_dropout_drops_at_its_rate_scales_the_rest_and_is_off_in_inference():
    spec_params = model(batch_norm=False, dropout=0.5)
    params = case_settings({"name": "dropout", "model": spec_params, "train": train(), **DATA})
    spec = build_spec(params.model, (DATA["image_size"], DATA["image_size"], 1), 10)
    reference = Reference(spec, initial_weights(spec, np.random.default_rng(0)), KERAS_LIKE)
    images = np.random.default_rng(1).normal(size=(64, DATA["image_size"], DATA["image_size"], 1))
    _, caches = reference.forward(images, training=True, draws=np.random.default_rng(2))
    masks = [cache for layer, cache in zip(spec.layers, caches) if layer.kind == "dropout"]
    assert len(masks) == 3 and all(set(np.unique(mask)) == {0.0, 2.0} for mask in masks)
    assert abs(float(np.mean(masks[0] == 0)) - 0.5) < 0.02
    first, _ = reference.forward(images, training=False)
    again, _ = reference.forward(images, training=False)
    np.testing.assert_array_equal(first, again)
    with pytest.raises(ValueError, match="generator"):
        reference.forward(images, training=True)


def test_dropout_with_supplied_masks_keeps_exactly_those_inputs_scaled_by_one_over_the_keep_share():
    """The masks a test reads back from a framework (tests/trainer_contract.py's dropout check):
    each dropout layer keeps exactly its mask's inputs, times 1/(1 - rate), in training only."""
    spec_params = model(batch_norm=False, dropout=0.25)
    params = case_settings({"name": "dropout", "model": spec_params, "train": train(), **DATA})
    spec = build_spec(params.model, (DATA["image_size"], DATA["image_size"], 1), 10)
    reference = Reference(spec, initial_weights(spec, np.random.default_rng(0)), KERAS_LIKE)
    images = np.random.default_rng(1).normal(size=(4, DATA["image_size"], DATA["image_size"], 1))
    shapes = [layer.output_shape for layer in spec.layers if layer.kind == "dropout"]
    keeps = [np.random.default_rng(index).random((4, *shape)) >= 0.25 for index, shape in enumerate(shapes)]

    _, caches = reference.forward(images, training=True, masks=keeps)

    applied = [cache for layer, cache in zip(spec.layers, caches) if layer.kind == "dropout"]
    for keep, mask in zip(keeps, applied, strict=True):
        np.testing.assert_array_equal(mask, keep / 0.75)
    with pytest.raises(ValueError, match="fewer masks"):
        reference.forward(images, training=True, masks=keeps[:-1])
    with pytest.raises(ValueError, match="1 more masks"):
        reference.forward(images, training=True, masks=[*keeps, keeps[0]])
