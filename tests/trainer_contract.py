"""Tests that every trainer must pass: the same contract, checked once per framework.

Run for one registered framework, in a pytest process of its own (importing two frameworks in one
process can crash it): ``pytest tests/trainer_contract.py --framework NAME``, which is what
``make test`` does, in a loop over the registry, for a framework without a ``tests/<name>/``
folder. A framework with checks of its own (Keras, PyTorch, JAX/Flax) has
``tests/<name>/test_train_<name>.py``, which sets ``FRAMEWORK`` and star-imports these tests
beside its own; ``make test`` then runs that folder instead.
"""

from __future__ import annotations

import dataclasses
import json
import logging

import numpy as np
import pytest

from stages import backends
from stages.backends.base import EpochRecord, NonFiniteLoss
from stages.common import metrics, paths, prepared, schemas, yamlfile
from stages.common.architecture import build_spec, initial_weights, save_initial_weights
from stages.common.errors import StageError
from stages.common.params import validate
from stages.common.schedules import learning_rates
from stages.evaluate import __main__ as evaluate_stage
from stages.train import __main__ as train_stage
from tests.support import FakeClock, assert_glorot_initialisation, project_params, synthetic_images, write_params

TUTORIAL = {"conv_blocks": [{"filters": 32, "kernel_size": 3, "convs": 1, "batch_norm": False, "pool": 2,
                             "dropout": 0.0}], "padding": "valid", "block_order": "conv-norm-act-pool",
            "activation": "relu", "dense": [], "dense_dropout": 0.0}
SMALL = {"conv_blocks": [{"filters": 8, "kernel_size": 3, "convs": 1, "batch_norm": True, "pool": 2,
                          "dropout": 0.0}], "padding": "same", "block_order": "conv-pool-norm-act",
         "activation": "relu", "dense": [16], "dense_dropout": 0.1}


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


def framework_under_test(request) -> str:
    """The importing module's ``FRAMEWORK``, else the one ``--framework`` names (exactly one)."""
    if hasattr(request.module, "FRAMEWORK"):
        return request.module.FRAMEWORK
    named = request.config.getoption("--framework")
    if len(named) != 1 or named[0] not in backends.names():
        pytest.fail(f"tests/trainer_contract.py runs for one registered framework: --framework NAME, one of "
                    f"{', '.join(backends.names())} (given: {named or 'none'})", pytrace=False)
    return named[0]


@pytest.fixture(scope="module")
def framework(request) -> str:
    return framework_under_test(request)


@pytest.fixture(scope="module")
def backend(framework):
    return backends.load(framework)


def test_the_backend_has_every_member_of_the_protocol_with_its_signature(backend):
    """What mypy checks for the modules listed in stages/backends/conformance.py, checked at run
    time for any registered module (a framework registered only for a test run included)."""
    import inspect

    from stages.backends.base import Backend

    for name, member in vars(Backend).items():
        if name.startswith("_"):
            continue
        assert hasattr(backend, name), f"{backend.__name__} has no {name}"
        if callable(member):
            expected = list(inspect.signature(member).parameters)[1:]  # without self
            assert list(inspect.signature(getattr(backend, name)).parameters) == expected, name
    for name in Backend.__annotations__:
        assert hasattr(backend, name), f"{backend.__name__} has no {name}"
    assert isinstance(backend.MODEL_FILE, str) and isinstance(backend.SEMANTICS, dict)


SMALL_INITIAL = "shared"  # fit_small(initial=SMALL_INITIAL): stages.common.architecture's draw for seed 0


def fit_small(backend, settings, train=None, val=None, model_params=SMALL, seed=3, initial=None, on_step_end=None):
    params = make_params(model_params)
    spec = build_spec(params.model, (28, 28, 1), 10)
    backend.configure(settings, seed)
    model = backend.build_model(spec, seed)
    if initial == SMALL_INITIAL:
        backend.set_weights(model, initial_weights(spec, np.random.default_rng(0)))
    train = train if train is not None else make_split(256, 1)
    val = val if val is not None else make_split(100, 2)
    records: list[EpochRecord] = []
    steps = -(-train.labels.shape[0] // settings.batch_size)
    backend.fit(model, train, val, settings, learning_rates(settings, steps), seed, records.append,
                on_step_end=on_step_end)
    return model, records


def small_settings(**overrides):
    return dataclasses.replace(make_params(SMALL, epochs=3, batch_size=32, threads=1, device="cpu").train,
                               **overrides)


@pytest.mark.parametrize("model_params", [None, TUTORIAL, SMALL], ids=["default", "tutorial", "small"])
def test_built_model_has_the_specs_parameter_count(backend, model_params):
    """(Its layers, read from the framework's own classes, are each framework's check: tests/<name>/.)"""
    params = make_params(model_params)
    spec = build_spec(params.model, (28, 28, 1), 10)
    assert backend.count_parameters(backend.build_model(spec, 0)) == spec.parameters


def test_tutorial_model_has_the_tutorials_parameter_count(backend):
    spec = build_spec(make_params(TUTORIAL).model, (28, 28, 1), 10)
    assert backend.count_parameters(backend.build_model(spec, 0)) == 54_410  # 320 conv + 54,090 dense


def test_training_lowers_the_loss_and_learns(backend):
    _, records = fit_small(backend, small_settings())
    assert [record.epoch for record in records] == [1, 2, 3]
    assert records[-1].train_loss < records[0].train_loss
    assert records[-1].val_accuracy > 0.5  # the synthetic classes are easy; chance is 0.1
    assert all(record.seconds >= record.train_seconds > 0 for record in records)


@pytest.mark.parametrize("optimizer", ["adam", "adamw", "sgd"])
@pytest.mark.parametrize("schedule", ["constant", "cosine", "onecycle"])
def test_every_optimizer_and_schedule_trains_and_records_the_rate_its_optimizer_applied(backend, optimizer,
                                                                                        schedule):
    settings = small_settings(optimizer=optimizer, schedule=schedule, epochs=1, learning_rate=0.01)
    steps = []
    model, records = fit_small(backend, settings, train=make_split(96, 1), val=make_split(20, 2),
                               on_step_end=steps.append)
    assert np.isfinite(records[0].train_loss)
    # Read back from the optimizer at each step (Keras holds the rate in float32).
    table = learning_rates(settings, 3)
    np.testing.assert_allclose([step.learning_rate for step in steps], table, rtol=1e-6)
    assert records[0].learning_rate == steps[-1].learning_rate


def test_training_with_augmentation_and_label_smoothing_stays_finite(backend):
    settings = small_settings(epochs=1, label_smoothing=0.1,
                              augment=dataclasses.replace(small_settings().augment, enabled=True))
    _, records = fit_small(backend, settings, train=make_split(64, 1), val=make_split(20, 2))
    assert np.isfinite(records[0].train_loss) and np.isfinite(records[0].val_loss)


def test_augmentation_changes_what_training_sees(backend):
    """From the same weights and batches, training with augmentation on ends elsewhere than off."""
    off = small_settings(epochs=1)
    on = dataclasses.replace(off, augment=dataclasses.replace(off.augment, enabled=True))
    data = {"train": make_split(64, 1), "val": make_split(20, 2)}
    without, _ = fit_small(backend, off, initial=SMALL_INITIAL, **data)
    again, _ = fit_small(backend, off, initial=SMALL_INITIAL, **data)
    augmented, _ = fit_small(backend, on, initial=SMALL_INITIAL, **data)
    first = backend.get_weights(without)[0]
    np.testing.assert_array_equal(first, backend.get_weights(again)[0])  # without: reproducible
    assert np.abs(backend.get_weights(augmented)[0] - first).max() > 1e-4


# Dropout, read back from one SGD step (rate 0.5 or 0.25 before the output layer). The model is a
# 1x1 conv with a sigmoid (every one of the 784 inputs to the dense kernel is known and non-zero),
# flatten, dropout, dense: with one image, plain SGD (no momentum, no decay) and the bias step
# -lr * g, the dense kernel's row i moves by -lr * x_i * m_i / (1 - rate) * g. A row that stays put
# is an input the dropout dropped; a kept row's step over x_i * (bias step) is the scale.
DROPOUT_MODEL = {"conv_blocks": [{"filters": 1, "kernel_size": 1, "convs": 1, "batch_norm": False, "pool": 1,
                                  "dropout": 0.0}], "padding": "valid", "block_order": "conv-norm-act-pool",
                 "activation": "sigmoid", "dense": [], "dense_dropout": 0.5}
DROPOUT_FALSE_ALARM = 1e-6  # the binomial bound on the dropped share: a correct rate leaves it this rarely


def one_sgd_step(backend, rate: float):
    """Shared weights, one image, one plain SGD step: (spec, settings, start, trained model, epoch
    record, the image, the validation images)."""
    params = make_params({**DROPOUT_MODEL, "dense_dropout": rate}, optimizer="sgd", momentum=0.0, weight_decay=0.0,
                         schedule="constant", warmup_fraction=0.0, label_smoothing=0.0, epochs=1, batch_size=1,
                         learning_rate=0.01, threads=1, device="cpu")
    settings = dataclasses.replace(params.train, augment=dataclasses.replace(params.train.augment, enabled=False))
    spec = build_spec(params.model, (28, 28, 1), 10)
    start = initial_weights(spec, np.random.default_rng(0))
    rng = np.random.default_rng(7)
    train = prepared.Split(rng.uniform(-1.0, 1.0, (1, 28, 28, 1)).astype(np.float32), np.array([3], np.uint8))
    val = prepared.Split(rng.uniform(-1.0, 1.0, (6, 28, 28, 1)).astype(np.float32),
                         np.arange(6).astype(np.uint8))
    backend.configure(settings, 5)
    model = backend.build_model(spec, 5)
    backend.set_weights(model, start)
    records: list[EpochRecord] = []
    backend.fit(model, train, val, settings, learning_rates(settings, 1), 5, records.append)
    return spec, settings, start, model, records[0], train, val


@pytest.mark.parametrize("rate", [0.5, 0.25])
def test_dropout_drops_its_rate_of_inputs_in_training_scales_the_rest_and_is_off_in_evaluation(backend, rate):
    from scipy import special, stats

    from tests.reference_trainer import Reference, cross_entropy, optimizer_step

    spec, settings, start, model, record, train, val = one_sgd_step(backend, rate)
    plain = one_sgd_step(backend, 0.0)[3]  # the same step without dropout
    trained, without = backend.get_weights(model), backend.get_weights(plain)
    kernel_step, bias_step = trained[2] - start[2], trained[3] - start[3]
    inputs = special.expit(train.images[0].reshape(-1).astype(np.float64) * start[0].item() + start[1].item())

    # Without dropout every row moves, by exactly x_i times the bias step (the method sees no dropout
    # where there is none); with it, training ends elsewhere.
    np.testing.assert_allclose(without[2] - start[2], inputs[:, None] * (without[3] - start[3])[None, :],
                               rtol=1e-3, atol=1e-7)
    assert np.abs(trained[2] - without[2]).max() > 1e-3, "dropout changed nothing in training"

    # (b) The dropped share: rows whose step is exactly zero, within a binomial bound of the rate.
    dropped = np.all(kernel_step == 0, axis=1)
    assert not np.any(kernel_step[~dropped] == 0), "a row partly dropped: the mask is not per input"
    low, high = stats.binom.interval(1 - DROPOUT_FALSE_ALARM, dropped.size, rate)
    assert low <= dropped.sum() <= high, (f"{dropped.sum()} of {dropped.size} inputs dropped at rate {rate}; "
                                          f"expected {low:.0f} to {high:.0f}")

    # (c) The kept inputs are scaled by 1/(1 - rate): each kept row over x_i times the bias step.
    scale = kernel_step[~dropped] / (inputs[~dropped, None] * bias_step[None, :])
    np.testing.assert_allclose(scale, 1 / (1 - rate), rtol=1e-3, err_msg="kept activations' scale")
    # The whole step, replayed by the framework-free reference with the mask read back, matches.
    reference = Reference(spec, start, backend.SEMANTICS)
    logits, caches = reference.forward(train.images.astype(np.float64), training=True, masks=[~dropped[None, :]])
    _, upstream = cross_entropy(logits, np.eye(10)[train.labels])
    optimizer_step(reference, reference.backward(upstream, caches), {}, settings, settings.learning_rate, 1)
    for index, (expected, actual) in enumerate(zip(reference.weights, trained, strict=True)):
        np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-6, err_msg=f"weight {index}")

    # (d) Evaluation: no dropout, no scale, in predict (both levels) and fit's validation. Probabilities
    # within a relative 1e-4 are log-probabilities, the logits less a constant per image, within 1e-4.
    expected = Reference(spec, trained, backend.SEMANTICS).forward(val.images.astype(np.float64), training=False)[0]
    probabilities = special.softmax(expected, axis=1)
    for switches in ((), backend.TUNED):
        predicted = backend.predict(backend.for_inference(model, switches), val.images, batch_size=4)
        np.testing.assert_allclose(predicted, probabilities, rtol=1e-4, atol=1e-6)
    val_loss = -np.mean(np.log(probabilities[np.arange(6), val.labels]))
    assert record.val_loss == pytest.approx(val_loss, rel=1e-4)


def test_initial_weights_are_glorot_uniform_with_zero_biases(backend):
    spec = build_spec(make_params().model, (28, 28, 1), 10)
    backend.configure(small_settings(), 0)
    assert_glorot_initialisation(spec, backend.get_weights(backend.build_model(spec, 0)))


def test_seed_changes_the_initial_weights(backend):
    spec = build_spec(make_params(SMALL).model, (28, 28, 1), 10)
    draws = []
    for seed in (1, 1, 2):
        backend.configure(small_settings(), seed)
        draws.append(backend.get_weights(backend.build_model(spec, seed))[0])
    np.testing.assert_array_equal(draws[0], draws[1])
    assert not np.array_equal(draws[0], draws[2])


def test_nan_inputs_stop_training_with_a_clear_error(backend):
    train = make_split(64, 1)
    images = np.array(train.images)
    images[:] = np.nan
    # Caught at the first batch (PyTorch, Keras' loss) or when the epoch ends (TensorFlow's ReLU can
    # turn NaN into 0, hiding it from the loss: then the weights are checked).
    with pytest.raises(NonFiniteLoss, match=r"loss became nan at epoch 1, batch 1;|weights became NaN or infinite "
                                            r"during epoch 1;"):
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


def test_training_on_the_cpu_sets_no_op_determinism_flag_at_either_level(backend):
    """Stock is the framework as its guide writes it: no deterministic-kernel flag on the CPU, at
    either level (``runtime.op_determinism``), read back from each framework loaded in this process.
    The bytes still repeat: ``test_same_seed_gives_identical_weights`` here, and two processes in
    ``tests/test_equivalence.py``'s ``test_shipped_recipe_trains_to_identical_bytes_in_two_processes``."""
    import os
    import sys

    for tuning in ("stock", "tuned"):
        settings = small_settings(epochs=1, tuning=tuning, switches=backend.TUNED if tuning == "tuned" else ())
        fit_small(backend, settings, train=make_split(32, 1), val=make_split(8, 2))
        if "torch" in sys.modules:
            assert not sys.modules["torch"].are_deterministic_algorithms_enabled(), tuning
            assert "CUBLAS_WORKSPACE_CONFIG" not in os.environ, tuning
        if "tensorflow" in sys.modules:
            from tensorflow.python.framework import config as tf_config  # no public getter

            assert not tf_config.is_op_determinism_enabled(), tuning
        assert "xla_gpu_deterministic_ops" not in os.environ.get("XLA_FLAGS", ""), tuning


def test_the_backend_describes_its_levels_switches_semantics_and_environment(backend):
    from stages.common.semantics import SEMANTIC_CHOICES

    assert len(backend.DESCRIPTION) > 80 and "tuned" in backend.DESCRIPTION
    assert set(backend.TUNED) <= set(backend.SWITCHES)
    if not backend.TUNED:  # a framework whose docs recommend nothing beyond its defaults says so
        assert "the tuned level is the stock one" in backend.DESCRIPTION
    assert all("https://" in text for text in backend.SWITCHES.values())  # each names the doc that recommends it
    assert set(backend.SEMANTICS) == set(SEMANTIC_CHOICES)
    assert all(value in SEMANTIC_CHOICES[key] for key, value in backend.SEMANTICS.items())
    environment = backend.environment()
    assert environment and all(isinstance(key, str) and isinstance(value, str) for key, value in environment.items())
    assert "numpy" in environment


def test_tuned_training_is_reproducible_and_learns(backend):
    settings = small_settings(epochs=2, tuning="tuned", switches=backend.TUNED)
    first, records = fit_small(backend, settings, train=make_split(96, 1), val=make_split(20, 2))
    second, _ = fit_small(backend, settings, train=make_split(96, 1), val=make_split(20, 2))
    assert records[-1].train_loss < records[0].train_loss
    for left, right in zip(backend.get_weights(first), backend.get_weights(second), strict=True):
        assert left.tobytes() == right.tobytes()


def test_tuned_inference_gives_the_stock_predictions(backend):
    model, _ = fit_small(backend, small_settings(epochs=1), train=make_split(64, 1), val=make_split(20, 2))
    images = make_split(30, 5).images
    standard = backend.predict(backend.for_inference(model, ()), images, batch_size=10)
    compiled = backend.predict(backend.for_inference(model, backend.TUNED), images, batch_size=10)
    np.testing.assert_allclose(compiled, standard, atol=1e-5)
    np.testing.assert_array_equal(compiled.argmax(1), standard.argmax(1))


def test_predict_gives_probabilities(backend):
    """The softmax of the network's outputs in inference mode, classes in order: the framework-free
    reference's forward pass over the model's own weights (float64), as in the dropout test."""
    from scipy import special

    from tests.reference_trainer import Reference

    model, _ = fit_small(backend, small_settings(epochs=1), train=make_split(64, 1), val=make_split(20, 2))
    spec = build_spec(make_params(SMALL).model, (28, 28, 1), 10)
    images = make_split(30, 5).images
    probabilities = backend.predict(model, images, batch_size=7)
    assert probabilities.shape == (30, 10) and probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    outputs = Reference(spec, backend.get_weights(model), backend.SEMANTICS).forward(images.astype(np.float64),
                                                                                     training=False)[0]
    np.testing.assert_allclose(probabilities, special.softmax(outputs, axis=1), rtol=1e-4, atol=1e-6)


def test_save_and_safe_load_round_trip(backend, tmp_path):
    model, _ = fit_small(backend, small_settings(epochs=1), train=make_split(64, 1), val=make_split(20, 2))
    spec = build_spec(make_params(SMALL).model, (28, 28, 1), 10)
    first, second = tmp_path / f"a_{backend.MODEL_FILE}", tmp_path / f"b_{backend.MODEL_FILE}"
    backend.save_model(model, first)
    backend.save_model(model, second)
    assert first.read_bytes() == second.read_bytes()  # no timestamps: identical weights, identical bytes
    loaded = backend.load_model(first, spec)
    for left, right in zip(backend.get_weights(loaded), backend.get_weights(model), strict=True):
        np.testing.assert_array_equal(left, right)
    images = make_split(16, 4).images
    np.testing.assert_allclose(backend.predict(loaded, images, 16), backend.predict(model, images, 16), atol=1e-6)
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


# --------------------------------------------------------------------------------------------
# The stages end to end, through their real main(): train, then evaluate, in a temporary project
# --------------------------------------------------------------------------------------------
STAGE_MODEL = {"conv_blocks": [{"filters": 4, "kernel_size": 3, "convs": 1, "batch_norm": True, "pool": 2,
                                "dropout": 0.0}], "padding": "valid", "block_order": "conv-pool-norm-act",
               "activation": "relu", "dense": [16], "dense_dropout": 0.25}


def write_prepared(folder, size: int = 12, counts=(("train", 96), ("val", 32), ("test", 40))) -> None:
    """Raw 0..255 pixels (normalize: none), the bars of tests.support.synthetic_images."""
    rng = np.random.default_rng(11)
    splits = {}
    for name, count in counts:
        labels = (np.arange(count) % 10).astype(np.uint8)
        rng.shuffle(labels)
        splits[name] = prepared.Split(synthetic_images(labels, size, rng).astype(np.float32)[..., None], labels)
    meta = prepared.build_meta(dataset="custom", class_names=[f"c{index}" for index in range(10)],
                               image_shape=(size, size, 1), normalize={"method": "none", "mean": 0.0, "std": 1.0},
                               splits=splits, sources={}, seed=0, val_fraction=0.25)
    prepared.save_prepared(folder / "data" / "prepared", splits, meta)


def stage_project(folder, framework: str, init: str = "shared", model: dict | None = None, **overrides):
    """A temporary project: params.yaml (tiny model, 2 epochs), prepared data and, for ``shared``
    init, the same initial weights for seeds 1 and 2 (so only the seed given to the trainer differs)."""
    raw = project_params()
    raw["model"] = model or STAGE_MODEL
    raw["train"].update(epochs=2, batch_size=16, learning_rate=0.01, threads=1, device="cpu")
    raw["replicates"] = {"seeds": [1, 2], "tuned_seeds": [1], "init": init}
    raw["evaluate"].update(batch_size=16, throughput_repeats=1, latency_samples=2, latency_warmup=0)
    if framework not in raw["frameworks"]:  # a registered framework that params.yaml does not run by default
        raw["frameworks"] = [*raw["frameworks"], framework]
    raw[framework] = dict(overrides)
    write_params(folder, raw)
    write_prepared(folder)
    params = validate(raw)
    spec = build_spec(params.model, (12, 12, 1), 10)
    if init == "shared":
        for seed in (1, 2):
            save_initial_weights(folder / paths.init_weights(seed), initial_weights(spec, np.random.default_rng(0)))
    return spec


def trained_weights(backend, framework: str, seed: int, spec) -> list[np.ndarray]:
    return backend.get_weights(backend.load_model(paths.model_dir(framework, seed) / backend.MODEL_FILE, spec))


def test_replicate_seed_reaches_the_trainer_through_the_train_stage(backend, framework, tmp_path, monkeypatch):
    """Same initial weights for seeds 1 and 2 and no dropout: their models differ only if the seed
    reaches fit (the batch order); seed 1 trained twice gives the same weights. (The same bytes
    in two processes, as DVC runs stages: tests/test_equivalence.py; within one process Keras
    numbers its layer names on, and the names are in the archive.)"""
    monkeypatch.chdir(tmp_path)
    spec = stage_project(tmp_path, framework, model={**STAGE_MODEL, "dense_dropout": 0.0})

    train_stage.main([framework, "1"])
    first = trained_weights(backend, framework, 1, spec)
    train_stage.main([framework, "2"])
    train_stage.main([framework, "1"])

    for left, right in zip(trained_weights(backend, framework, 1, spec), first, strict=True):
        assert left.tobytes() == right.tobytes()
    one, two = trained_weights(backend, framework, 1, spec), trained_weights(backend, framework, 2, spec)
    assert max(float(np.abs(left - right).max()) for left, right in zip(one, two)) > 1e-3
    info = json.loads((paths.model_dir(framework, 2) / paths.RUN_FILE).read_text())
    assert (info["framework"], info["seed"], info["init"]) == (framework, 2, "shared")


def test_replicate_seed_draws_the_initial_weights_when_each_framework_draws_its_own(backend, framework, tmp_path,
                                                                                    monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec = stage_project(tmp_path, framework, init="framework", epochs=1)

    for seed in ("1", "2"):
        train_stage.main([framework, seed])

    one, two = trained_weights(backend, framework, 1, spec), trained_weights(backend, framework, 2, spec)
    assert not np.allclose(one[0], two[0], atol=1e-3)


def test_input_scale_override_is_applied_in_training_and_in_evaluation(backend, framework, tmp_path, monkeypatch):
    """The tutorial preset's case: raw 0..255 inputs, this framework alone scaling them by 1/255."""
    monkeypatch.chdir(tmp_path)
    scale = 0.00392156862745098
    spec = stage_project(tmp_path, framework, input_scale=scale, epochs=4)

    train_stage.main([framework, "1"])
    evaluate_stage.main([framework, "1"])

    info = json.loads((paths.model_dir(framework, 1) / paths.RUN_FILE).read_text())
    assert info["input_scale"] == scale
    model = backend.load_model(paths.model_dir(framework, 1) / backend.MODEL_FILE, spec)
    test = prepared.load_prepared(paths.PREPARED, splits=("test",)).splits["test"]
    predictions = np.load(paths.eval_dir(framework, 1) / paths.PREDICTIONS_FILE)
    np.testing.assert_allclose(predictions, backend.predict(model, test.images, 16, input_scale=scale), atol=1e-6)
    unscaled = backend.predict(model, test.images, 16, input_scale=1.0)
    assert np.abs(predictions - unscaled).max() > 0.1  # the scale matters for these inputs
    metrics = json.loads((paths.eval_dir(framework, 1) / paths.METRICS_FILE).read_text())
    assert metrics["test_accuracy"] == pytest.approx(float(np.mean(predictions.argmax(1) == test.labels)))
    assert metrics["test_accuracy"] > 0.5  # trained on scaled inputs, it learnt the bars (chance: 0.1)
    dvclive_summary = json.loads((paths.logs_dir(framework, 1) / paths.METRICS_FILE).read_text())
    assert dvclive_summary["epochs"] == 4


def test_evaluate_refuses_a_model_built_for_other_images(backend, framework, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    stage_project(tmp_path, framework, epochs=1)
    train_stage.main([framework, "1"])
    write_prepared(tmp_path, size=14)  # the data changed under the model

    with pytest.raises(StageError, match=r"built for \(12, 12, 1\) images and 10 classes, but .* holds "
                                         r"\(14, 14, 1\)"):
        evaluate_stage.main([framework, "1"])
    assert not paths.eval_dir(framework, 1).exists()


# --------------------------------------------------------------------------------------------
# Augmentation, checked on images: the backend's ``augment`` (images NHWC, settings, background,
# seed) -> images NHWC, the augmentation fit applies to each training batch.
# --------------------------------------------------------------------------------------------
SIZE = 28
BACKGROUND = -0.5


def augment_settings(max_shift: float, max_rotation_deg: float):
    settings = small_settings()
    return dataclasses.replace(settings, augment=dataclasses.replace(
        settings.augment, enabled=True, max_shift=max_shift, max_rotation_deg=max_rotation_deg))


def square_images(count: int, top: int, left: int, side: int = 4) -> np.ndarray:
    images = np.full((count, SIZE, SIZE, 1), BACKGROUND, np.float32)
    images[:, top:top + side, left:left + side] = 2.0
    return images


def centroids(images: np.ndarray) -> np.ndarray:
    """(row, column) of the bright square's centre of mass in each image."""
    mass = np.clip(images[..., 0] - BACKGROUND, 0.0, None)
    rows, columns = np.mgrid[0:SIZE, 0:SIZE]
    total = mass.sum(axis=(1, 2))
    return np.stack([(mass * rows).sum(axis=(1, 2)) / total, (mass * columns).sum(axis=(1, 2)) / total], axis=1)


def test_augmentation_shifts_images_within_max_shift(backend):
    augment = backend.augment
    images = square_images(64, 12, 12)  # centred: a rotation would not move it

    moved = centroids(augment(images, augment_settings(0.1, 0.0), BACKGROUND, 5)) - centroids(images)

    limit = 0.1 * SIZE + 0.5  # 2.8 px (PyTorch rounds translations to whole pixels: 3)
    assert np.abs(moved).max() <= limit
    assert np.abs(moved).max() > 0.5 * limit  # the shifts use the range
    assert np.mean(np.abs(moved).max(axis=1) > 0.5) > 0.5  # most images moved


def test_augmentation_rotates_images_within_max_rotation(backend):
    augment = backend.augment
    images = square_images(64, 4, 12)  # 8 px above the centre (13.5, 13.5)
    centre = (SIZE - 1) / 2

    after = centroids(augment(images, augment_settings(0.0, 10.0), BACKGROUND, 5)) - centre
    angles = np.degrees(np.arctan2(after[:, 1], -after[:, 0]))

    assert np.abs(angles).max() <= 10.0 + 2.5  # a few degrees for the pixel grid
    assert np.abs(angles).max() > 5.0
    np.testing.assert_allclose(np.hypot(after[:, 0], after[:, 1]), 8.0, atol=1.0)  # rotated about the centre


def test_augmentation_fills_uncovered_pixels_with_the_background_and_invents_no_values(backend):
    augment = backend.augment
    images = np.ones((16, SIZE, SIZE, 1), np.float32)

    output = augment(images, augment_settings(0.1, 10.0), BACKGROUND, 5)

    assert output.shape == images.shape and output.dtype == np.float32
    assert output.min() >= BACKGROUND - 1e-5 and output.max() <= 1.0 + 1e-5
    filled = np.isclose(output, BACKGROUND, atol=1e-5).mean(axis=(1, 2, 3))
    assert np.mean(filled > 0) > 0.5  # most images moved something out of frame


def test_augmentation_with_zero_bounds_leaves_images_unchanged(backend):
    augment = backend.augment
    images = make_split(8, 3).images

    np.testing.assert_allclose(augment(images, augment_settings(0.0, 0.0), BACKGROUND, 5), images, atol=1e-5)


def test_augmentation_is_seeded(backend):
    augment = backend.augment
    images = square_images(16, 4, 12)
    settings = augment_settings(0.1, 10.0)

    first, again, other = (augment(images, settings, BACKGROUND, seed) for seed in (5, 5, 6))

    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)


def test_evaluate_stage_writes_the_measured_metrics_and_the_per_image_files(backend, framework, tmp_path, monkeypatch,
                                                                            caplog):
    """metrics.json, per_class.json, confusion.csv and predictions.npy of one real evaluation; the
    clock is replaced, so the speed figures are known exactly."""
    monkeypatch.chdir(tmp_path)
    spec = stage_project(tmp_path, framework, epochs=1, input_scale=0.5)
    raw = yamlfile.read(tmp_path / "params.yaml")
    train_stage.main([framework, "1"])
    # 3 timed passes over 40 test images, then 4 single-image calls (evaluate params of stage_project).
    clock = FakeClock([0.3, 0.35, 0.9] + [0.001, 0.002, 0.004, 0.003123456])
    monkeypatch.setattr(metrics, "time", clock)  # the timing loops of stages/common/metrics.py
    calls = []
    real_predict = backend.predict

    def predict(model, images, batch_size, input_scale=1.0):  # records each call, then predicts
        calls.append((images.shape[0], batch_size, input_scale))
        return real_predict(model, images, batch_size, input_scale)

    monkeypatch.setattr(backend, "predict", predict)
    raw["evaluate"].update(throughput_repeats=3, latency_samples=4, latency_warmup=1)
    write_params(tmp_path, raw)
    caplog.set_level(logging.INFO, logger="evaluate")

    evaluate_stage.main([framework, "1"])

    folder = paths.eval_dir(framework, 1)
    result = schemas.load(schemas.TestMetrics, folder / paths.METRICS_FILE, "rerun")  # every field, typed
    assert clock.durations == []  # every timed call was timed
    assert (result.throughput_images_per_second, result.throughput_images_per_second_min,
            result.throughput_images_per_second_max) == (77.4, 44.4, 133.3)  # 3 x 40 images in 0.3 + 0.35 + 0.9 s
    # Throughput: a warm-up and 3 timed passes over the test set; latency: a warm-up and 4 single images.
    assert calls == [(40, 16, 0.5)] * 4 + [(1, 1, 0.5)] * 5
    assert (result.latency_ms_median, result.latency_ms_p95) == (2.5617, 3.8685)
    model_file = paths.model_dir(framework, 1) / backend.MODEL_FILE
    assert (result.test_images, result.parameters, result.model_bytes) == (40, spec.parameters,
                                                                           model_file.stat().st_size)
    test = prepared.load_prepared(paths.PREPARED, splits=("test",)).splits["test"]
    predictions = np.load(folder / paths.PREDICTIONS_FILE)
    assert predictions.shape == (40, 10) and predictions.dtype == np.float32
    predicted = predictions.argmax(1)
    assert result.test_accuracy == pytest.approx(float(np.mean(predicted == test.labels)))
    per_class = schemas.load(schemas.PerClass, folder / paths.PER_CLASS_FILE, "rerun")
    assert per_class.class_names == [f"c{index}" for index in range(10)]
    assert np.array_equal(per_class.confusion, np.bincount(test.labels * 10 + predicted, minlength=100).reshape(10, 10))
    assert result.macro_recall == pytest.approx(float(np.mean(per_class.recall)))
    rows = (folder / paths.CONFUSION_FILE).read_text().splitlines()
    assert rows[0] == "actual,predicted" and len(rows) == 41
    assert rows[1:] == [f"c{actual},c{guess}" for actual, guess in zip(test.labels, predicted)]
    assert [record.getMessage() for record in caplog.records if record.name == "evaluate"] == [
        f"{backends.label(framework)} (stock) seed 1: test accuracy {100 * result.test_accuracy:.2f}%, loss "
        f"{result.test_loss:.4f}, 77 images/s at batch 16 (3 passes), latency median 2.56 ms p95 3.87 ms"]
    assert (result.tuning, result.switches) == ("stock", [])
    assert result.environment["threads"] == "1" and result.environment["numpy"] == np.__version__


def test_the_tuned_level_trains_and_evaluates_into_its_own_arm_and_records_its_switches(backend, framework, tmp_path,
                                                                                        monkeypatch):
    monkeypatch.chdir(tmp_path)
    stage_project(tmp_path, framework, epochs=1)

    train_stage.main([framework, "1", "--tuning", "tuned"])
    evaluate_stage.main([framework, "1", "--tuning", "tuned"])

    run = schemas.load(schemas.RunInfo, paths.model_dir(framework, 1, "tuned") / paths.RUN_FILE, "rerun")
    assert (run.tuning, run.switches) == ("tuned", {name: backend.SWITCHES[name] for name in backend.TUNED})
    assert (run.description, run.semantics) == (backend.DESCRIPTION, backend.SEMANTICS)
    assert run.environment["cores"] and run.environment["threads"] == "1"
    result = schemas.load(schemas.TestMetrics, paths.eval_dir(framework, 1, "tuned") / paths.METRICS_FILE, "rerun")
    assert (result.tuning, result.switches) == ("tuned", list(backend.TUNED))
    assert not paths.model_dir(framework, 1).exists() and not paths.eval_dir(framework, 1).exists()


def test_evaluate_without_a_trained_model_names_the_stage_to_run(backend, framework, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    stage_project(tmp_path, framework)

    with pytest.raises(StageError, match=rf"architecture\.json: missing; run `dvc repro train@2-{framework}`"):
        evaluate_stage.main([framework, "2"])


def test_train_model_builds_loads_the_initial_weights_and_fits_with_the_background(backend):
    """stages.train.training.train_model is fit() on a model built from ``initial``: same weights as
    calling the backend directly, augmentation filling with the given background (far from 0 here)."""
    from stages.train.training import EpochLog, train_model

    off = small_settings(epochs=1)
    settings = dataclasses.replace(off, augment=dataclasses.replace(off.augment, enabled=True))
    spec = build_spec(make_params(SMALL).model, (28, 28, 1), 10)
    start = initial_weights(spec, np.random.default_rng(0))
    data = {"train": make_split(64, 1), "val": make_split(20, 2)}

    backend.configure(settings, 3)
    trained = train_model(backend, spec, data["train"], data["val"], settings, 3, EpochLog("test", 1, 64),
                          initial=start, background=-3.0)
    backend.configure(settings, 3)
    direct = backend.build_model(spec, 3)
    backend.set_weights(direct, start)
    backend.fit(direct, data["train"], data["val"], settings, learning_rates(settings, 2), 3, lambda record: None,
                background=-3.0)

    for left, right in zip(backend.get_weights(trained), backend.get_weights(direct), strict=True):
        np.testing.assert_array_equal(left, right)


# --------------------------------------------------------------------------------------------
# Hostile or damaged inputs: refused before any work, in one line naming the file
# --------------------------------------------------------------------------------------------
def poison_with_nan(arrays: list[np.ndarray]) -> None:
    arrays[0][0, 0, 0, 0] = np.nan


def swap_for_another_shape(arrays: list[np.ndarray]) -> None:
    arrays[0] = np.zeros((5, 5, 1, 4), np.float32)  # STAGE_MODEL's first kernel is 3x3x1x4


@pytest.mark.parametrize(("change", "problem"), [
    (poison_with_nan, r"w0 holds 1 NaN or infinite values; expected finite weights; rerun `dvc repro init`"),
    (swap_for_another_shape, r"w0 has shape \(5, 5, 1, 4\), expected \(3, 3, 1, 4\); the model in params\.yaml "),
])
def test_train_refuses_damaged_initial_weights_naming_the_file_before_training(backend, framework, tmp_path,
                                                                                monkeypatch, change, problem):
    monkeypatch.chdir(tmp_path)
    spec = stage_project(tmp_path, framework)
    weights = initial_weights(spec, np.random.default_rng(0))
    change(weights)
    save_initial_weights(paths.init_weights(1), weights)
    monkeypatch.setattr(backend, "fit", lambda *arguments, **options: pytest.fail("training started"))

    with pytest.raises(StageError, match=rf"^{paths.init_weights(1)}: {problem}"):
        train_stage.main([framework, "1"])
    assert not paths.model_dir(framework, 1).exists() and not paths.logs_dir(framework, 1).exists()


def test_evaluate_refuses_a_model_file_with_nan_weights_naming_it(backend, framework, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec = stage_project(tmp_path, framework, epochs=1)
    train_stage.main([framework, "1"])
    path = paths.model_dir(framework, 1) / backend.MODEL_FILE
    model = backend.load_model(path, spec)
    weights = backend.get_weights(model)
    weights[-2][0, :3] = [np.nan, np.inf, np.nan]  # the output layer's kernel
    backend.set_weights(model, weights)
    backend.save_model(model, path)

    with pytest.raises(StageError, match=rf"^{path}: 3 NaN or infinite weight values \(in 1 of its "
                                         rf"{len(weights)} arrays\); expected finite weights; retrain it: "
                                         rf"`dvc repro train@1-{framework}`$"):
        evaluate_stage.main([framework, "1"])
    assert not paths.eval_dir(framework, 1).exists()


def has_gpu(backend) -> bool:
    try:
        return backend.configure(small_settings(device="cuda"), 0) == "cuda"
    except StageError:
        return False


@pytest.mark.parametrize("kind", ["train", "evaluate"])
def test_cuda_without_a_gpu_is_refused_first_and_says_how_to_get_the_outputs_back(backend, framework, tmp_path,
                                                                                  monkeypatch, kind):
    """The one check that needs the machine runs after DVC removed the stage's outputs: it comes
    before any data is read (no data/prepared here), and its line says how to restore them."""
    if has_gpu(backend):
        pytest.skip("this machine has a GPU: train.device: cuda runs")
    monkeypatch.chdir(tmp_path)
    raw = project_params()
    raw["train"]["device"] = "cuda"
    if framework not in raw["frameworks"]:  # a registered framework that params.yaml does not run by default
        raw["frameworks"] = [*raw["frameworks"], framework]
        raw.setdefault(framework, {})
    write_params(tmp_path, raw)
    stage = train_stage if kind == "train" else evaluate_stage
    cached, in_git = paths.replicate_outputs(kind, framework, 1)

    with pytest.raises(StageError) as refused:
        stage.main([framework, "1"])

    message = str(refused.value)
    assert message.startswith("train.device is 'cuda' but ") and "\n" not in message
    assert message.endswith(f"under `dvc repro` the previous outputs of {kind}@1-{framework} were removed before it "
                            f"ran: `dvc checkout {' '.join(map(str, cached))}` and "
                            f"`git checkout -- {' '.join(map(str, in_git))}` bring them back")


# --------------------------------------------------------------------------------------------
# The ONNX export (stages/export, docs/onnx.md): train, evaluate, export, in a temporary project
# --------------------------------------------------------------------------------------------
# What a deployment does with the file: ONNX Runtime alone, in a process that imports nothing from
# the project; it prints the probabilities as JSON.
PLAIN_ONNX_RUNTIME = """
import json, sys
import numpy as np
import onnx, onnxruntime
onnx.checker.check_model(sys.argv[1], full_check=True)
session = onnxruntime.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
images = np.load(sys.argv[2]).astype(np.float32)
logits = session.run(None, {session.get_inputs()[0].name: images})[0]
shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
print(json.dumps((shifted / shifted.sum(axis=1, keepdims=True)).tolist()))
"""
# Probabilities of the export and of the framework differ by float32 rounding alone: measured at
# most 4e-7 on these models (1e-6 on the real run's, docs/onnx.md); 1e-5 leaves room for other CPUs.
PROBABILITY_TOLERANCE = 1e-5


def test_the_export_stage_writes_an_onnx_model_that_plain_onnx_runtime_runs_as_the_framework(
        backend, framework, tmp_path, monkeypatch):
    import subprocess
    import sys

    from stages import export as _  # noqa: F401 - the package, for its __main__ below
    from stages.export.__main__ import main as export_main

    monkeypatch.chdir(tmp_path)
    stage_project(tmp_path, framework, epochs=1)
    train_stage.main([framework, "1"])
    evaluate_stage.main([framework, "1"])
    export_main([framework, "1"])

    record = schemas.load(schemas.OnnxMetrics, paths.eval_dir(framework, 1) / paths.ONNX_METRICS_FILE, "rerun")
    folder = tmp_path / paths.onnx_dir(framework, 1)
    if record.error is not None:  # no route: the reason is written down, and the row stays in the report
        assert (folder / paths.NO_ROUTE_FILE).read_text(encoding="utf-8").strip() == record.error
        assert record.throughput_images_per_second is None and not (folder / paths.ONNX_FILE).exists()
        pytest.skip(f"{framework} has no ONNX route on these versions: {record.error}")
    test = prepared.load_prepared(tmp_path / paths.PREPARED, splits=("test",)).splits["test"]
    np.save(tmp_path / "images.npy", test.images)
    ran = subprocess.run([sys.executable, "-I", "-c", PLAIN_ONNX_RUNTIME, str(folder / paths.ONNX_FILE),
                          str(tmp_path / "images.npy")], capture_output=True, text=True, cwd="/", check=False)
    assert ran.returncode == 0, ran.stderr[-2000:]
    exported = np.asarray(json.loads(ran.stdout), dtype=np.float32)
    framework_probabilities = np.load(paths.eval_dir(framework, 1) / paths.PREDICTIONS_FILE)
    np.testing.assert_allclose(exported, framework_probabilities, atol=PROBABILITY_TOLERANCE, rtol=0)
    assert np.array_equal(exported.argmax(1), framework_probabilities.argmax(1))
    # The stage's own figures agree with what the plain session computed
    assert record.different_class_images == 0 and record.same_class_share == 1.0
    assert record.max_abs_probability_difference <= PROBABILITY_TOLERANCE
    assert record.test_accuracy == float(np.mean(exported.argmax(1) == test.labels))
    assert record.onnx_bytes == (folder / paths.ONNX_FILE).stat().st_size
    assert record.throughput_images_per_second > 0 and record.latency_ms_median > 0
    assert record.session["intra_op_num_threads"] == "1" and record.session["provider"] == "CPUExecutionProvider"
    assert sorted(path.name for path in folder.iterdir()) == [paths.ONNX_FILE]


def test_the_export_stage_without_the_frameworks_predictions_names_the_evaluate_stage(backend, framework, tmp_path,
                                                                                        monkeypatch):
    from stages.export.__main__ import main as export_main

    monkeypatch.chdir(tmp_path)
    stage_project(tmp_path, framework, epochs=1)
    train_stage.main([framework, "1"])
    with pytest.raises(StageError, match=rf"predictions\.npy: missing; run `dvc repro evaluate@1-{framework}`"):
        export_main([framework, "1"])
    assert not paths.onnx_dir(framework, 1).exists()
