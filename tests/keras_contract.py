"""What every Keras engine's tests share (tests/keras, tests/keras_jax, tests/keras_torch): the
trainer contract, Keras' safe-mode loader against a real payload, and the stock level read back
from Keras itself. Each engine's module sets ``FRAMEWORK``,
imports these, and runs in its own pytest process (one Keras engine per process)."""

import numpy as np
import pytest

from stages.common.architecture import build_spec
from stages.common.errors import StageError
from tests.trainer_contract import *  # noqa: F403 - the shared contract tests
from tests.trainer_contract import SMALL, TUTORIAL, make_params

# The engine each Keras framework runs on, fixed here: never read from the backend (its ENGINE is
# KERAS_BACKEND as the module set it, so a check against it cannot see that variable set wrong).
ENGINES = {"keras": "tensorflow", "keras_jax": "jax", "keras_torch": "torch"}
# The class of a Keras variable's value on each engine: (module, class).
VARIABLE_VALUES = {"tensorflow": ("tensorflow", "Variable"), "jax": ("jax", "Array"), "torch": ("torch", "Tensor")}
# What Keras' jit_compile="auto" gives on each engine: XLA on JAX; off on TensorFlow under op
# determinism; eager on PyTorch.
STOCK_JIT = {"tensorflow": False, "jax": True, "torch": False}


def test_the_train_stage_prints_only_the_projects_own_lines(framework, tmp_path):
    """No TensorFlow start-up lines, on any engine: on JAX and PyTorch, Keras looks TensorFlow up
    when imported and imports it in ``keras.utils.set_random_seed`` (stages/common/errors.py)."""
    import os
    import re
    import subprocess
    import sys

    from tests.support import PROJECT_ROOT
    from tests.trainer_contract import stage_project

    stage_project(tmp_path, framework)
    env = {key: value for key, value in os.environ.items() if key not in ("TF_CPP_MIN_LOG_LEVEL", "KERAS_BACKEND")}
    result = subprocess.run([sys.executable, "-m", "stages.train", framework, "1"], cwd=tmp_path, capture_output=True,
                            text=True, timeout=600, env={**env, "PYTHONPATH": str(PROJECT_ROOT)})

    assert result.returncode == 0, result.stderr
    own = re.compile(r"\d\d:\d\d:\d\d [\w.]+ (INFO|WARNING) .*")
    assert [line for line in result.stderr.splitlines() if not own.fullmatch(line)] == []
    assert "trained in" in result.stderr and result.stdout == ""


@pytest.mark.parametrize("damage", ["garbage", "hdf5", "truncated", "empty"])
def test_a_model_file_that_exists_but_does_not_load_is_not_a_keras_archive(backend, tmp_path, damage):
    import h5py

    spec = build_spec(make_params(SMALL).model, (28, 28, 1), 10)
    path = tmp_path / backend.MODEL_FILE
    if damage == "truncated":
        backend.save_model(backend.build_model(spec, 0), path)
        path.write_bytes(path.read_bytes()[:path.stat().st_size // 2])
    elif damage == "hdf5":  # Keras 2's format, under the .keras name
        with h5py.File(path, "w") as handle:
            handle["weights"] = np.zeros(3, np.float32)
    else:
        path.write_bytes(bytes(range(256)) * 8 if damage == "garbage" else b"")

    with pytest.raises(StageError) as caught:
        backend.load_model(path, spec)

    found = {"garbage": "it starts with b'\\x00\\x01", "hdf5": "it is an HDF5 file",
             "truncated": "it is a zip archive cut short", "empty": "it is empty"}[damage]
    assert str(caught.value).startswith(f"{path}: not a Keras archive ({found}"), caught.value
    assert "rerun the training stage (dvc repro train)" in str(caught.value)


@pytest.fixture(scope="module", autouse=True)
def keras_is_on_the_tables_engine(framework, backend):
    """Before any test of the module: Keras on another engine than ``ENGINES`` names stops every
    test here, naming both (run on, it can crash the process instead of failing: torch's compiler
    imports triton, which segfaults beside JAX or TensorFlow)."""
    import keras

    if keras.backend.backend() != ENGINES[framework]:
        pytest.fail(f"{framework} runs Keras on {keras.backend.backend()}, expected {ENGINES[framework]} "
                    f"(KERAS_BACKEND as {backend.__name__} sets it)", pytrace=False)


def test_keras_trains_on_the_engine_the_framework_names_read_back_three_ways(backend, framework, tmp_path,
                                                                           monkeypatch):
    """The real train stage: Keras' own ``keras.backend.backend()`` while it fits, the class of a
    trained variable's value, and the engine the replicate's recorded environment names, each
    against the fixed table ``ENGINES``."""
    import importlib
    import json

    import keras

    from stages.common import paths
    from stages.train import __main__ as train_stage
    from tests.trainer_contract import stage_project

    engine = ENGINES[framework]
    monkeypatch.chdir(tmp_path)
    stage_project(tmp_path, framework, epochs=1)
    fitted = []
    fit = keras.Model.fit

    def recording_fit(self, *args, **kwargs):  # the real fit, remembering the model and Keras' engine
        fitted.append((self, keras.backend.backend()))
        return fit(self, *args, **kwargs)

    monkeypatch.setattr(keras.Model, "fit", recording_fit)
    train_stage.main([framework, "1"])

    ((trained, running),) = fitted
    assert running == engine
    module, name = VARIABLE_VALUES[engine]
    value_class = getattr(importlib.import_module(module), name)
    values = [variable.value for variable in trained.trainable_variables]
    assert values and all(isinstance(value, value_class) for value in values), {type(value) for value in values}
    run = json.loads((paths.model_dir(framework, 1) / paths.RUN_FILE).read_text())
    assert run["environment"]["keras_engine"] == engine


def test_keras_archive_with_a_lambda_layer_is_refused_and_never_runs(backend, tmp_path):
    import keras

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
    unsafe(np.zeros((1, 28, 28, 1), np.float32))  # noqa: F405
    assert marker.read_text() == "ran"


@pytest.mark.parametrize(("optimizer", "weight_decay", "expected"), [
    ("adamw", 1e-4, "AdamW"), ("adam", 1e-4, "Adam"), ("adam", 0.0, "Adam"), ("sgd", 1e-4, "SGD")])
def test_a_stock_replicate_trains_with_keras_own_classes_and_loads_without_the_project(
        backend, framework, tmp_path, monkeypatch, optimizer, weight_decay, expected):
    """The stock level is Keras as its users write it: read back from Keras itself, every layer of
    the model that Model.fit trained and its optimizer are Keras' own classes with the recipe's
    values, XLA stays at Keras' default for the engine (``STOCK_JIT``); and the saved archive loads
    with Keras' safe mode, on the same engine, in an interpreter that never imports the project,
    giving the project's predictions."""
    import json
    import os
    import subprocess
    import sys

    import keras

    from tests.trainer_contract import fit_small, make_split, small_settings

    trained = []
    fit = keras.Model.fit

    def recording_fit(self, *args, **kwargs):  # the real fit, remembering what it trained
        trained.append(self)
        return fit(self, *args, **kwargs)

    monkeypatch.setattr(keras.Model, "fit", recording_fit)
    settings = small_settings(epochs=1, optimizer=optimizer, weight_decay=weight_decay)
    model, _ = fit_small(backend, settings, train=make_split(64, 1), val=make_split(10, 2))
    (trainer,) = trained
    layers, pending = [], list(trainer.layers)
    while pending:  # every layer, inside nested models too
        layer = pending.pop()
        layers.append(layer)
        pending += getattr(layer, "layers", [])
    assert model in layers and len(layers) > len(model.layers)
    assert all(type(layer).__module__.startswith("keras.") for layer in layers)
    # Keras' own class; on PyTorch, Keras itself builds its engine subclass (keras.src.backend.torch).
    assert isinstance(trainer.optimizer, getattr(keras.optimizers, expected))
    assert type(trainer.optimizer).__module__.startswith("keras.")
    engine = ENGINES[framework]
    if engine != "torch":
        assert type(trainer.optimizer) is getattr(keras.optimizers, expected)
    if expected != "SGD":
        assert trainer.optimizer.epsilon == backend.ADAM_EPSILON
    assert (trainer.optimizer.weight_decay or 0.0) == pytest.approx(weight_decay)
    assert keras.backend.backend() == engine
    assert trainer.jit_compile is STOCK_JIT[engine]
    assert "LD_PRELOAD" not in os.environ

    backend.save_model(model, tmp_path / "model.keras")
    images = make_split(8, 3).images
    np.save(tmp_path / "images.npy", images)
    plain = """
import json, sys
import keras, numpy as np
model = keras.saving.load_model("model.keras", compile=False, safe_mode=True)
np.save("plain.npy", keras.ops.convert_to_numpy(keras.ops.softmax(model(np.load("images.npy"), training=False))))
print(json.dumps([sorted({type(layer).__module__.split(".")[0] for layer in model.layers}),
                  sorted(name for name in sys.modules if name.split(".")[0] == "stages")]))
"""
    environment = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    result = subprocess.run([sys.executable, "-c", plain], cwd=tmp_path, capture_output=True, text=True,
                            timeout=300, env={**environment, "KERAS_BACKEND": engine})
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.splitlines()[-1]) == [["keras"], []]
    np.testing.assert_allclose(np.load(tmp_path / "plain.npy"), backend.predict(model, images, batch_size=8),
                               atol=1e-6)


@pytest.mark.parametrize("model_params", [None, TUTORIAL, SMALL], ids=["default", "tutorial", "small"])
def test_built_model_has_the_specs_layers_as_keras_own_classes(backend, model_params):
    import keras

    spec = build_spec(make_params(model_params).model, (28, 28, 1), 10)
    classes = {keras.layers.Conv2D: "conv", keras.layers.BatchNormalization: "batch_norm",
               keras.layers.Activation: "activation", keras.layers.MaxPooling2D: "max_pool",
               keras.layers.Dropout: "dropout", keras.layers.Flatten: "flatten", keras.layers.Dense: "dense"}
    layers = backend.build_model(spec, 0).layers
    assert [classes[type(layer)] for layer in layers] == [layer.kind for layer in spec.layers]
