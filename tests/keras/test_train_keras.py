"""The trainer contract (tests/trainer_contract.py) for TensorFlow/Keras, in a Keras-only process,
and what only Keras has: its augmentation layers and its safe-mode loader against a real payload."""

import numpy as np
import pytest

from stages.common.architecture import build_spec
from stages.common.errors import StageError
from tests.trainer_contract import *  # noqa: F403 - the shared contract tests
from tests.trainer_contract import SMALL, make_params

FRAMEWORK = "keras"


def augment_images(images, settings, background, seed):
    """The augmentation fit() puts in front of the model, applied as in training."""
    from stages.backends.keras import _augmentation

    return np.asarray(_augmentation(settings, background, seed)(images, training=True))


def test_keras_archive_with_a_lambda_layer_is_refused_and_never_runs(tmp_path):
    import keras

    from stages.backends import keras as backend

    marker = tmp_path / "marker"
    # A Lambda layer's function is stored as bytecode: loading it without safe mode runs it.
    function = eval(f"lambda x: (open({str(marker)!r}, 'w').write('ran'), x)[1]")  # noqa: S307
    evil = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Lambda(function, output_shape=(28, 28, 1))])
    path = tmp_path / backend.MODEL_FILE
    evil.save(path)
    marker.unlink(missing_ok=True)  # saving may have traced it
    spec = build_spec(make_params(SMALL).model, (28, 28, 1), 10)

    with pytest.raises(StageError, match=rf"{path}: not a loadable Keras model .*(?i:lambda|safe)"):
        backend.load_model(path, spec)
    assert not marker.exists()

    # The payload is live: Keras' unsafe mode runs it.
    unsafe = keras.saving.load_model(path, compile=False, safe_mode=False)
    unsafe(np.zeros((1, 28, 28, 1), np.float32))
    assert marker.read_text() == "ran"


@pytest.mark.parametrize("execution", ["standard", "compiled"])
def test_compiled_execution_runs_with_xla(execution):
    """Read back from Keras and TensorFlow: the trainer's resolved jit_compile, and XLA's
    must-compile mark on the traced inference function."""
    import tensorflow as tf
    from tensorflow.python.framework import config as tf_config

    from stages.backends import keras as backend
    from stages.common.schedules import learning_rates
    from tests.trainer_contract import small_settings

    settings = small_settings(execution=execution)
    backend.configure(settings, seed=1)  # as the train stage does: XLA training needs op determinism off
    assert tf_config.is_op_determinism_enabled() is (execution == "standard")
    model = backend.build_model(build_spec(make_params(SMALL).model, (28, 28, 1), 10))
    trainer = backend.compile_trainer(model, settings, learning_rates(settings, 4), seed=1)
    assert trainer.jit_compile is (execution == "compiled")
    call = backend.for_inference(model, execution)._comparison_call
    graph = call.get_concrete_function(tf.TensorSpec((None, 28, 28, 1), tf.float32)).function_def
    assert graph.attr["_XlaMustCompile"].b is (execution == "compiled")


def test_onednn_kernels_are_on_whatever_the_environment():
    """Read back from TensorFlow in a fresh process whose environment turns oneDNN off."""
    import os
    import subprocess
    import sys

    from tests.support import PROJECT_ROOT

    probe = ("import stages.backends.keras\n"
             "from tensorflow.python.util import _pywrap_util_port\n"
             "print('oneDNN', _pywrap_util_port.IsMklEnabled())")
    result = subprocess.run([sys.executable, "-c", probe], cwd=PROJECT_ROOT, capture_output=True, text=True,
                            env={**os.environ, "TF_ENABLE_ONEDNN_OPTS": "0"}, check=True, timeout=120)
    assert "oneDNN True" in result.stdout.splitlines()


def test_batch_norm_trains_with_tensorflows_fused_kernel_and_saves_as_keras_own_layer(tmp_path):
    """Read back from TensorFlow: the training graph's batch-norm ops; and from a plain Keras load
    (no project code registered) of the saved archive: Keras' own layer, the same weights."""
    import keras
    import tensorflow as tf

    from stages.backends import keras as backend

    model = backend.build_model(build_spec(make_params(SMALL).model, (28, 28, 1), 10))
    images = np.random.default_rng(0).normal(size=(4, 28, 28, 1)).astype(np.float32)

    @tf.function
    def training_step(batch):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(model(batch, training=True) ** 2)
        return tape.gradient(loss, model.trainable_variables)

    graph = training_step.get_concrete_function(tf.TensorSpec((None, 28, 28, 1), tf.float32)).graph
    operations = {operation.type for operation in graph.get_operations()}
    assert {"FusedBatchNormV3", "FusedBatchNormGradV3"} <= operations
    assert not {"Rsqrt", "SquaredDifference"} & operations  # Keras' own layer's separate ops

    training_step(images)  # moves the moving statistics away from their initial values
    path = tmp_path / backend.MODEL_FILE
    backend.save_model(model, path)
    loaded = keras.saving.load_model(path, compile=False, safe_mode=True)
    norms = [layer for layer in loaded.layers if "batch_norm" in layer.name]
    assert [type(layer) for layer in norms] == [keras.layers.BatchNormalization]
    assert [layer.name for layer in norms] == [layer.name.removeprefix("fused_") for layer in model.layers
                                               if isinstance(layer, backend.FusedBatchNormalization)]
    for saved, trained in zip(loaded.get_weights(), model.get_weights(), strict=True):
        np.testing.assert_array_equal(saved, trained)
    np.testing.assert_allclose(loaded(images, training=False), model(images, training=False), rtol=0, atol=1e-6)


def _applier(optimizer, variables):
    def apply(gradients):
        optimizer.apply_gradients(zip(gradients, variables))

    return apply


@pytest.mark.parametrize(("optimizer", "momentum", "kernel"), [
    ("adamw", 0.9, "ResourceApplyAdam"), ("adam", 0.9, "ResourceApplyAdam"),
    ("sgd", 0.9, "ResourceApplyKerasMomentum"), ("sgd", 0.0, "ResourceApplyGradientDescent")])
def test_optimizer_updates_with_tensorflows_fused_kernel_as_keras_own_does(optimizer, momentum, kernel):
    """Read back from TensorFlow: the optimizer fit() compiles updates every variable with one
    fused kernel (Keras' own optimizer runs none); over steps of a changing rate and weight
    decay its weights follow Keras' own optimizer of the same settings."""
    import keras
    import tensorflow as tf

    from stages.backends import keras as backend
    from stages.common.schedules import learning_rates
    from tests.trainer_contract import small_settings

    settings = small_settings(optimizer=optimizer, momentum=momentum, weight_decay=0.01)
    table = learning_rates(settings, 4)
    rng = np.random.default_rng(0)
    start = [rng.normal(size=shape).astype(np.float32) for shape in [(3, 3, 1, 8), (8,), (16, 10)]]
    gradients = [[rng.normal(size=array.shape).astype(np.float32) for array in start] for _ in range(12)]
    rate = backend.TableSchedule(table)
    reference = {"adamw": lambda: keras.optimizers.AdamW(rate, epsilon=backend.ADAM_EPSILON, weight_decay=0.01),
                 "adam": lambda: keras.optimizers.Adam(rate, epsilon=backend.ADAM_EPSILON, weight_decay=0.01),
                 "sgd": lambda: keras.optimizers.SGD(rate, momentum=momentum, weight_decay=0.01)}[optimizer]
    model = backend.build_model(build_spec(make_params(SMALL).model, (28, 28, 1), 10))
    results = {}
    for name, built in [("backend", backend.compile_trainer(model, settings, table, 1).optimizer),
                        ("keras", reference())]:
        variables = [keras.Variable(array) for array in start]
        apply = tf.function(_applier(built, variables))
        graph = apply.get_concrete_function([tf.TensorSpec(array.shape) for array in start]).graph
        for step in gradients:
            apply(step)
        results[name] = ([operation.type for operation in graph.get_operations()],
                         [np.asarray(variable) for variable in variables])

    assert results["backend"][0].count(kernel) == len(start)
    assert kernel not in results["keras"][0]
    for fused, own, initial in zip(results["backend"][1], results["keras"][1], start, strict=True):
        assert np.abs(fused - initial).max() > 1e-3  # the steps moved the weights
        np.testing.assert_allclose(fused, own, rtol=1e-5, atol=1e-6)


def test_training_dataset_runs_without_tf_data_autotuning():
    """Read back from tf.data: the options the training pipeline's iterator runs with (merged over
    the whole pipeline) have autotuning off, so fit() never waits for autotuning's model thread
    when it drops the iterator. (The wait itself, up to 40 s per stage and only some runs, is
    a timing: BENCHMARKS.md, not a test.)"""
    import tensorflow as tf

    from stages.backends import keras as backend

    dataset = backend._training_dataset(tf.zeros((64, 28, 28, 1)), tf.zeros((64, 10)),
                                        [np.arange(64), np.arange(64)[::-1]], 16, 1.0)
    assert dataset.options().autotune.enabled is False
    assert [batch.shape[0] for batch, _ in dataset] == [16] * 8  # still the whole run's batches


def test_evaluate_keeps_op_determinism_after_compiled_training(tmp_path, monkeypatch):
    """Read back from TensorFlow: compiled (XLA) training turns op determinism off for its own
    process; the evaluate stage of that model runs with it on."""
    from tensorflow.python.framework import config as tf_config

    from stages import evaluate as evaluate_stage
    from stages import train as train_stage
    from tests.trainer_contract import stage_project

    monkeypatch.chdir(tmp_path)
    stage_project(tmp_path, "keras", execution="compiled", epochs=1)
    train_stage.main(["keras", "1"])
    assert not tf_config.is_op_determinism_enabled()
    evaluate_stage.main(["keras", "1"])
    assert tf_config.is_op_determinism_enabled()
