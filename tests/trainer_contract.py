"""Tests that both trainers must pass: the same contract, checked once per framework.

``tests/keras/test_train_keras.py`` and ``tests/torch/test_train_torch.py`` import these tests
and set ``FRAMEWORK``; each runs in its own pytest process, so only one framework is ever
imported per process.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from stages import backends
from stages.backends.base import EpochRecord, NonFiniteLoss
from stages.common import prepared
from stages.common.architecture import build_spec
from stages.common.errors import StageError
from stages.common.params import validate
from stages.common.schedules import learning_rates
from tests.support import project_params, synthetic_images

TUTORIAL = {"conv_blocks": [{"filters": 32, "kernel_size": 3, "convs": 1, "batch_norm": False, "pool": 2,
                             "dropout": 0.0}], "padding": "valid", "activation": "relu", "dense": [],
            "dense_dropout": 0.0}
SMALL = {"conv_blocks": [{"filters": 8, "kernel_size": 3, "convs": 1, "batch_norm": True, "pool": 2,
                          "dropout": 0.0}], "padding": "same", "activation": "relu", "dense": [16],
         "dense_dropout": 0.1}


def make_params(model: dict | None = None, **train_overrides):
    raw = project_params()
    if model is not None:
        raw["model"] = model
    raw["train"].update(train_overrides)
    return validate(raw)


def make_split(count: int, seed: int) -> prepared.Split:
    rng = np.random.default_rng(seed)
    labels = (np.arange(count) % 10).astype(np.uint8)
    rng.shuffle(labels)
    images = synthetic_images(labels, 28, rng).astype(np.float32)[..., None]
    return prepared.Split((images - 60.0) / 80.0, labels)


@pytest.fixture(scope="module")
def backend(request):
    return backends.load(request.module.FRAMEWORK)


def fit_small(backend, settings, train=None, val=None, model_params=SMALL, seed=3):
    params = make_params(model_params)
    spec = build_spec(params.model, (28, 28, 1), 10)
    backend.configure(settings, seed)
    model = backend.build_model(spec)
    train = train if train is not None else make_split(256, 1)
    val = val if val is not None else make_split(100, 2)
    records: list[EpochRecord] = []
    steps = -(-train.labels.shape[0] // settings.batch_size)
    backend.fit(model, train, val, settings, learning_rates(settings, steps), seed, records.append)
    return model, records


def small_settings(**overrides):
    return dataclasses.replace(make_params(SMALL, epochs=3, batch_size=32, threads=1, device="cpu").train,
                               **overrides)


@pytest.mark.parametrize("model_params", [None, TUTORIAL, SMALL], ids=["default", "tutorial", "small"])
def test_built_model_matches_the_spec(backend, model_params):
    params = make_params(model_params)
    spec = build_spec(params.model, (28, 28, 1), 10)
    model = backend.build_model(spec)
    assert backend.layer_kinds(model) == [layer.kind for layer in spec.layers]
    assert backend.count_parameters(model) == spec.parameters


def test_tutorial_model_has_the_tutorials_parameter_count(backend):
    spec = build_spec(make_params(TUTORIAL).model, (28, 28, 1), 10)
    assert backend.count_parameters(backend.build_model(spec)) == 54_410  # 320 conv + 54,090 dense


def test_training_lowers_the_loss_and_learns(backend):
    _, records = fit_small(backend, small_settings())
    assert [record.epoch for record in records] == [1, 2, 3]
    assert records[-1].train_loss < records[0].train_loss
    assert records[-1].val_accuracy > 0.5  # the synthetic classes are easy; chance is 0.1
    assert all(record.seconds >= record.train_seconds > 0 for record in records)


@pytest.mark.parametrize("optimizer", ["adam", "adamw", "sgd"])
@pytest.mark.parametrize("schedule", ["constant", "cosine", "onecycle"])
def test_every_optimizer_and_schedule_trains(backend, optimizer, schedule):
    settings = small_settings(optimizer=optimizer, schedule=schedule, epochs=1, learning_rate=0.01)
    _, records = fit_small(backend, settings, train=make_split(96, 1), val=make_split(20, 2))
    assert np.isfinite(records[0].train_loss)
    assert records[0].learning_rate == pytest.approx(learning_rates(settings, 3)[-1])


def test_augmentation_and_label_smoothing_train(backend):
    settings = small_settings(epochs=1, label_smoothing=0.1,
                              augment=dataclasses.replace(small_settings().augment, enabled=True))
    _, records = fit_small(backend, settings, train=make_split(64, 1), val=make_split(20, 2))
    # With smoothing 0.1 over 10 classes the loss cannot fall below the smoothed entropy (~0.5).
    assert records[0].train_loss > 0.4 and np.isfinite(records[0].val_loss)


def test_nan_inputs_stop_training_with_a_clear_error(backend):
    train = make_split(64, 1)
    images = np.array(train.images)
    images[:] = np.nan
    with pytest.raises(NonFiniteLoss, match=r"(loss|weights) became (nan|NaN)"):
        fit_small(backend, small_settings(), train=prepared.Split(images, train.labels))


def test_diverging_training_stops_with_a_clear_error(backend):
    # Far outside what params.yaml accepts: the point is the trainer's reaction to divergence.
    settings = small_settings(optimizer="sgd", schedule="constant", learning_rate=1e30)
    with pytest.raises(NonFiniteLoss, match="epoch 1"):
        fit_small(backend, settings)


def test_same_seed_gives_identical_weights(backend):
    settings = small_settings(epochs=1)
    first, _ = fit_small(backend, settings, train=make_split(96, 1), val=make_split(20, 2))
    second, _ = fit_small(backend, settings, train=make_split(96, 1), val=make_split(20, 2))
    for left, right in zip(backend.get_weights(first), backend.get_weights(second), strict=True):
        assert left.tobytes() == right.tobytes()


def test_predict_gives_probabilities(backend):
    model, _ = fit_small(backend, small_settings(epochs=1), train=make_split(64, 1), val=make_split(20, 2))
    images = make_split(30, 5).images
    probabilities = backend.predict(model, images, batch_size=7)
    assert probabilities.shape == (30, 10) and probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(probabilities.argmax(1), backend.logits(model, images).argmax(1))


def test_save_and_safe_load_round_trip(backend, tmp_path):
    model, _ = fit_small(backend, small_settings(epochs=1), train=make_split(64, 1), val=make_split(20, 2))
    spec = build_spec(make_params(SMALL).model, (28, 28, 1), 10)
    first, second = tmp_path / f"a_{backend.MODEL_FILE}", tmp_path / f"b_{backend.MODEL_FILE}"
    backend.save_model(model, first)
    backend.save_model(model, second)
    assert first.read_bytes() == second.read_bytes()  # no timestamps: identical weights, identical bytes
    loaded = backend.load_model(first, spec)
    images = make_split(16, 4).images
    np.testing.assert_allclose(backend.logits(loaded, images), backend.logits(model, images), atol=1e-6)
    assert sorted(path.name for path in tmp_path.iterdir()) == [first.name, second.name]  # no temp files left


def test_corrupt_model_file_is_a_clear_error(backend, tmp_path):
    spec = build_spec(make_params(SMALL).model, (28, 28, 1), 10)
    path = tmp_path / backend.MODEL_FILE
    path.write_bytes(b"PK\x03\x04 this is not a model")
    with pytest.raises(StageError, match=str(path)):
        backend.load_model(path, spec)
    with pytest.raises(StageError, match="missing"):
        backend.load_model(tmp_path / "absent" / backend.MODEL_FILE, spec)


def test_model_for_another_architecture_is_rejected(backend, tmp_path):
    model, _ = fit_small(backend, small_settings(epochs=1), train=make_split(64, 1), val=make_split(20, 2))
    path = tmp_path / backend.MODEL_FILE
    backend.save_model(model, path)
    other = build_spec(make_params(TUTORIAL).model, (28, 28, 1), 10)
    with pytest.raises(StageError, match=str(path)):
        backend.load_model(path, other)


def test_cuda_requested_without_a_gpu_is_a_clear_error(backend):
    settings = small_settings(device="cuda")
    try:
        device = backend.configure(settings, 0)
    except StageError as error:
        assert "train.device is 'cuda'" in str(error)
    else:
        assert device == "cuda"  # a machine with a GPU
